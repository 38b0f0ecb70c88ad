"""Extract whole-utterance speaker embeddings to Kaldi ``xvector.ark`` / ``xvector.scp``.

    python -m wespeaker_lap.bin.extract --model_dir exp/lap_astp \\
        --data data/test --embed_dir exp/lap_astp/embeddings/test

    # sharded over processes (results merged in key order by rank 0):
    torchrun --nproc_per_node=4 -m wespeaker_lap.bin.extract ...

Input is a Kaldi data dir (``wav.scp`` + ``utt2spk``, ``utt2dur`` used for
length grouping when present) or a raw/shard list. Utterances are batched by
similar length; the frontend is exact under padding, so an utterance's
embedding does not depend on its batch. Outputs in ``embed_dir``:
``xvector.ark`` + ``xvector.scp`` (keys sorted), ``mean_vec.npy`` (the mean
embedding, for mean subtraction in scoring) and, with ``--layer_scores``,
``layer_scores.npy`` (the backend's layer attention averaged over the set:
(heads, L) for LAP, (1, L) weights for a weighted sum). Every file is written
under a temporary name and renamed, so an interrupted run leaves no corrupt ark.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import kaldiio
import numpy as np
from tqdm import tqdm

from wespeaker_lap.io.files import atomic_path
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def write_xvectors(embed_dir: str | os.PathLike, embeddings: Mapping[str, np.ndarray],
                   name: str = "xvector") -> tuple[Path, Path]:
    """Write ``{name}.ark`` + ``{name}.scp`` (keys sorted) atomically; returns their paths.

    The ark is written under a temporary name and the scp is rewritten to point
    at the final ark before both are renamed into place (ark first).
    """
    embed_dir = Path(embed_dir)
    embed_dir.mkdir(parents=True, exist_ok=True)
    ark, scp = embed_dir / f"{name}.ark", embed_dir / f"{name}.scp"
    keys = sorted(embeddings)
    # the inner block (ark) is renamed first, so a final scp never points at a missing ark
    with atomic_path(scp) as tmp_scp, atomic_path(ark) as tmp_ark:
        kaldiio.save_ark(str(tmp_ark), {k: np.asarray(embeddings[k], dtype=np.float32)
                                        for k in keys}, scp=str(tmp_scp))
        lines = tmp_scp.read_text(encoding="utf-8").splitlines()
        fixed = []
        for line in lines:
            key, loc = line.split(" ", 1)
            offset = loc.rsplit(":", 1)[1]
            fixed.append(f"{key} {ark}:{offset}\n")
        tmp_scp.write_text("".join(fixed), encoding="utf-8")
    return ark, scp


def read_xvectors(scp: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``xvector.scp`` into a dict key -> float32 vector."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in kaldiio.load_scp(str(scp)).items()}


def eval_entries(data: str | None, data_list: str | None, data_type: str):
    """The eval loader's input: entries of a data dir (with durations) or a list path."""
    if (data is None) == (data_list is None):
        raise ValueError("give exactly one of --data (a Kaldi data dir) or --data_list")
    if data is not None:
        from wespeaker_lap.dataset.datadir import read_data_dir
        from wespeaker_lap.dataset.lists import raw_entries_from_data_dir

        return raw_entries_from_data_dir(read_data_dir(data)), "raw"
    return data_list, data_type


def extract(args: argparse.Namespace) -> int:
    import torch

    from wespeaker_lap.dataset.dataset import build_eval_loader
    from wespeaker_lap.utils.config import read_yaml
    from wespeaker_lap.utils.distributed import all_gather_object, barrier, init_distributed
    from wespeaker_lap.utils.inference import (
        LayerScoreSum,
        embed_batches,
        load_trained_extractor,
        resolve_model_dir,
    )

    if args.model_dir:
        config, weights = resolve_model_dir(args.model_dir)
    else:
        if not args.config:
            raise ValueError("give --model_dir, or --config with --model_path")
        config, weights = Path(args.config), args.model_path
    if args.model_path:
        weights = Path(args.model_path)
    info = init_distributed(args.device)
    setup_logging(rank=info.rank)
    torch.set_num_threads(args.threads) if args.threads else None
    cfg = read_yaml(config)
    rate = int((cfg.get("dataset_args") or {}).get("sample_rate", 16000))
    extractor = load_trained_extractor(cfg, weights, info.device, args.dtype)
    source, data_type = eval_entries(args.data, args.data_list, args.data_type)
    loader = build_eval_loader(
        source, data_type, sample_rate=rate, batch_size=args.batch_size,
        max_batch_seconds=args.max_batch_seconds, num_workers=args.num_workers,
        rank=info.rank, world_size=info.world_size,
    )
    scores = LayerScoreSum() if args.layer_scores else None
    mine: dict[str, np.ndarray] = {}
    bar = tqdm(desc=f"extract {Path(args.embed_dir).name}", unit="utt",
               disable=not info.is_main or args.no_progress)
    for keys, emb in embed_batches(extractor, loader, info.device, scores):
        for k, e in zip(keys, emb, strict=True):
            if k in mine:
                raise ValueError(f"utterance {k!r} appears twice in the input")
            mine[k] = e
        bar.update(len(keys))
    bar.close()
    stats = getattr(loader, "last_stats", None) or {}
    parts = all_gather_object((mine, scores, int(stats.get("skipped", 0))), info)
    if info.is_main:
        merged: dict[str, np.ndarray] = {}
        total = LayerScoreSum()
        skipped = sum(p[2] for p in parts)
        for part, part_scores, _ in parts:
            dup = set(part) & set(merged)
            if dup:
                raise ValueError(f"utterances extracted by two ranks: {sorted(dup)[:5]}")
            merged.update(part)
            if part_scores is not None:
                total.merge(part_scores)
        if not merged:
            raise ValueError("no embeddings were extracted (all inputs skipped?)")
        ark, scp = write_xvectors(args.embed_dir, merged)
        mean = np.mean(np.stack([merged[k] for k in sorted(merged)]), axis=0)
        with atomic_path(Path(args.embed_dir) / "mean_vec.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, mean.astype(np.float32))
        if scores is not None:
            with atomic_path(Path(args.embed_dir) / "layer_scores.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, total.mean().astype(np.float32))
        logger.info("wrote %d embeddings (dim %d) to %s%s", len(merged), len(mean), scp,
                    f"; {skipped} input(s) skipped as bad audio" if skipped else "")
    barrier(info)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_dir", help="trained exp_dir (config.yaml + avg_model.pt or models/)")
    p.add_argument("--config", help="training config.yaml (instead of --model_dir)")
    p.add_argument("--model_path", help="weights file (default: from --model_dir)")
    p.add_argument("--data", help="Kaldi data dir (wav.scp, utt2spk[, utt2dur])")
    p.add_argument("--data_list", help="raw.list or shard.list (instead of --data)")
    p.add_argument("--data_type", default="raw", choices=["raw", "shard"])
    p.add_argument("--embed_dir", required=True, help="output directory")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_batch_seconds", type=float, default=240.0,
                   help="cap on batch_size x longest utterance (s)")
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="frozen SSL forward precision")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--layer_scores", action="store_true",
                   help="also write layer_scores.npy (the backend's layer attention)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return extract(args)
    except (OSError, ValueError, FloatingPointError) as e:
        logger.error("%s", e)
        return 1
    finally:
        from wespeaker_lap.utils.distributed import cleanup

        cleanup()


if __name__ == "__main__":
    sys.exit(main())
