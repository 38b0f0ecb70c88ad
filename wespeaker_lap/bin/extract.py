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

The frozen SSL model is the one the experiment's ``frontend.json`` records (a
relative path in ``config.yaml`` is taken from the model directory); a
different one is an error naming both, unless ``--ignore_frontend_mismatch``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wespeaker_lap.checks import ConfigError, check_int, check_number
from wespeaker_lap.models.inference import resolve_model_dir
from wespeaker_lap.utils.distributed import cleanup, init_distributed
from wespeaker_lap.utils.extraction import (
    ExtractOptions,
    eval_source,
    extract_embeddings,
    set_threads,
)
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def check_options(args: argparse.Namespace) -> None:
    """The options' ranges and the output directory, before the model is loaded."""
    check_int("--batch_size", args.batch_size, lo=1)
    if args.max_batch_seconds is not None:
        check_number("--max_batch_seconds", args.max_batch_seconds, lo=0, lo_open=True)
    check_int("--num_workers", args.num_workers, lo=0)
    check_int("--utts_per_spk", args.utts_per_spk, lo=0)
    if args.threads is not None:
        check_int("--threads", args.threads, lo=1)
    out = Path(args.embed_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--embed_dir {out} is a file; give a directory")
    if args.model_path and Path(args.model_path).is_dir():
        raise ConfigError(f"--model_path {args.model_path} is a directory; give a weights file "
                          "(e.g. models/avg_model.pt), or the directory as --model_dir")


def extract(args: argparse.Namespace) -> int:
    check_options(args)
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
    set_threads(args.threads)
    source, data_type = eval_source(args.data, args.data_list, args.data_type,
                                    args.utts_per_spk)
    opts = ExtractOptions(batch_size=args.batch_size, max_batch_seconds=args.max_batch_seconds,
                          num_workers=args.num_workers, dtype=args.dtype,
                          layer_scores=args.layer_scores, progress=not args.no_progress,
                          ignore_frontend_mismatch=args.ignore_frontend_mismatch,
                          allow_pipes=args.allow_pipes)
    extract_embeddings(config, weights, source, data_type, args.embed_dir, info, opts)
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
    p.add_argument("--utts_per_spk", type=int, default=0,
                   help="with --data: embed only the first N utterances of each speaker (0: all; "
                   "an AS-norm cohort and a mean need no more than a few)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_batch_seconds", type=float, default=240.0,
                   help="cap on batch_size x longest utterance (s)")
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"],
                   help="frozen SSL forward precision")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--layer_scores", action="store_true",
                   help="also write layer_scores.npy (the backend's layer attention)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--ignore_frontend_mismatch", action="store_true",
                   help="use the frozen SSL model found even when it differs from the one "
                   "the experiment was trained with (its frontend.json)")
    p.add_argument("--allow_pipes", action="store_true",
                   help="run Kaldi piped wav.scp entries ('cmd |') with a shell, as Kaldi does")
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
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
