"""Self-supervised pre-training of a small HuBERT on unlabeled audio (masked unit prediction).

The mini recipe has no downloadable SSL checkpoint, so it pre-trains its own,
after Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by
Masked Prediction of Hidden Units", IEEE/ACM TASLP 2021 (see
``wespeaker_lap.pretrain``):

1. read the wav.scp files into memory (unreadable, silent or too-short files are
   skipped and counted; no speaker label is read);
2. units: k-means (MiniBatchKMeans, ``num_units`` clusters) over 39-d MFCC +
   deltas (iteration 1), or over hidden state ``units_layer`` of an earlier
   model given as ``units_from`` (iteration 2);
3. train a ``transformers.HubertModel`` to predict the units of masked frames (and,
   with ``unmasked_weight`` > 0, of the unmasked frames too);
4. save the encoder with ``save_pretrained`` (plus ``preprocessor_config.json``)
   so ``SSLFrontend(<out>)`` loads it like a hub checkpoint, together with
   ``pretrain_log.tsv`` (loss and masked-unit accuracy per step, chance levels
   in its header), ``pretrain_curve.png``, ``units.npy`` (the k-means centroids)
   and ``pretrain.yaml`` (the config that ran and the command line).

    python -m wespeaker_lap.bin.pretrain_ssl --config conf/ssl_hubert_mini.yaml \\
        --wav_scp data/pool/wav.scp --out exp/ssl

The output directory is written whole or not at all (a temporary sibling
renamed at the end); a re-run removes what an interrupted run left and starts
again. ``--steps 0`` saves the seeded random initialisation (the "random
weights" baseline) without clustering.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
import yaml

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.io.files import read_yaml
from wespeaker_lap.pretrain.curve import plot_history
from wespeaker_lap.pretrain.features import load_corpus, mfcc_deltas
from wespeaker_lap.pretrain.hubert import (
    History,
    HubertPretrainModel,
    build_config,
    clean_stale_tmp,
    layer_features,
    save_atomic,
    train,
)
from wespeaker_lap.pretrain.kmeans import assign_units, fit_units
from wespeaker_lap.pretrain.schema import PRETRAIN_DTYPES, PretrainArgs, parse_pretrain_config
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def unit_features(corpus, args: PretrainArgs) -> list[np.ndarray]:
    """The frames k-means clusters: MFCC + deltas, or an earlier model's hidden state."""
    src = args.units_from
    if src == "mfcc":
        logger.info("unit features: 39-d MFCC + deltas of %d utterances", len(corpus.wavs))
        return [mfcc_deltas(corpus.audio(i)) for i in range(len(corpus.wavs))]
    if not (Path(src) / "config.json").is_file():
        raise FileNotFoundError(f"units_from {src!r}: neither 'mfcc' nor a save_pretrained "
                                "directory (no config.json)")
    prev = transformers.HubertModel.from_pretrained(src)
    logger.info("unit features: hidden state %d of %s", args.units_layer, src)
    return layer_features(prev, corpus, args.units_layer)


def pretrain(cfg: dict[str, Any], wav_scps: list[str], out_dir: str, seed: int,
             max_minutes: float | None = None, command: str = "",
             source: str = "pretrain config") -> History:
    """Pre-train as configured by ``cfg`` (``model_args`` + ``train_args``) -> ``out_dir``.

    The whole config is checked first (errors name the key and ``source``, the file).
    """
    model_args, args = parse_pretrain_config(cfg, source)
    try:
        config = build_config(model_args, args.attention)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    clean_stale_tmp(out_dir)
    torch.manual_seed(seed)
    contrast_dim = args.proj_dim if args.contrast_on else 0
    model = HubertPretrainModel(config, args.num_units, args.proj_dim, args.temperature,
                                contrast_dim)
    n_params = sum(p.numel() for p in model.hubert.parameters())
    logger.info("HuBERT encoder: %d layers x %d, %.2fM parameters", config.num_hidden_layers,
                config.hidden_size, n_params / 1e6)
    hist = History(args.num_units)
    centroids = None
    if args.steps > 0:
        corpus = load_corpus(wav_scps, args.min_seconds)
        feats = unit_features(corpus, args)
        km = fit_units(feats, args.num_units, seed, args.kmeans_max_frames)
        centroids = km.cluster_centers_.astype(np.float32)
        units = assign_units(km, feats)
        del feats
        out = Path(out_dir)
        partial_png = out.parent / f"{out.name}_curve.partial.png"

        def on_log(h: History) -> None:  # a live view of the curve while it trains
            if len(h.step) > 1:
                plot_history(h, partial_png, title=f"{out.name} (training)")

        hist = train(model, corpus, units, args, seed, max_minutes, on_log=on_log)
        partial_png.unlink(missing_ok=True)
    else:
        logger.info("no pre-training steps: saving the random initialisation (seed %d)", seed)

    def extra(tmp: Path) -> None:
        ran = {"command": command, "seed": seed, "model_args": model_args,
               "train_args": args.to_dict()}
        (tmp / "pretrain.yaml").write_text(yaml.safe_dump(ran, sort_keys=False))
        if centroids is not None:
            np.save(tmp / "units.npy", centroids)
        if hist.step:
            (tmp / "pretrain_log.tsv").write_text(hist.to_tsv())
            plot_history(hist, tmp / "pretrain_curve.png",
                         title=f"HuBERT masked-unit prediction, K = {hist.num_units}")

    save_atomic(model.hubert, out_dir, extra)
    return hist


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="YAML with model_args and train_args")
    p.add_argument("--wav_scp", required=True, nargs="+", help="Kaldi wav.scp file(s)")
    p.add_argument("--out", required=True, help="output directory (save_pretrained layout)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=None,
                   help="override train_args.steps (0: save the seeded random initialisation)")
    p.add_argument("--steps_scale", type=int, default=1,
                   help="multiply the steps (the config's or --steps) by this factor, as the "
                   "mini recipe's --scale does")
    p.add_argument("--units_from", default=None,
                   help="override train_args.units_from: 'mfcc' or an earlier model's directory")
    p.add_argument("--units_layer", type=int, default=None, help="override train_args.units_layer")
    p.add_argument("--dtype", default=None, choices=list(PRETRAIN_DTYPES),
                   help="override train_args.dtype (autocast of the forward; auto: bfloat16 "
                   "where a start-up probe finds it faster)")
    p.add_argument("--max_minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps is not None and args.steps < 0:
        raise SystemExit(f"--steps must be >= 0 (0 saves the random initialisation), "
                         f"got {args.steps}")
    if args.steps_scale < 1:
        raise SystemExit(f"--steps_scale must be >= 1, got {args.steps_scale}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise SystemExit(f"--max_minutes must be > 0, got {args.max_minutes}")
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    for scp in args.wav_scp:  # before any work: a wrong path is named at once
        if not Path(scp).is_file():
            logger.error("--wav_scp: no such file: %s%s", scp,
                         " (a directory; give its wav.scp)" if Path(scp).is_dir() else "")
            return 2
    command = shlex.join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv))
    try:
        cfg = read_yaml(args.config)
        train_args = cfg.get("train_args") or {}
        if isinstance(train_args, dict):
            for key in ("steps", "units_from", "units_layer", "dtype"):
                if getattr(args, key) is not None:
                    train_args[key] = getattr(args, key)
            steps = train_args.get("steps", PretrainArgs.steps)  # the schema's default
            if args.steps_scale != 1 and isinstance(steps, int) and not isinstance(steps, bool):
                train_args["steps"] = steps * args.steps_scale  # a bad type: the check names it
            cfg["train_args"] = train_args
        # pretrain() checks the whole config before any work: a bad key stops there
        pretrain(cfg, args.wav_scp, args.out, args.seed, args.max_minutes, command, args.config)
    except (ConfigError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    except (OSError, ValueError) as e:  # bad audio in the corpus (named), a full disk
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
