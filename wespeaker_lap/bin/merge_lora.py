"""Fold a LoRA-trained model's LoRA matrices into its SSL weights: a plain model directory.

    python -m wespeaker_lap.bin.merge_lora --model_dir exp/lap_lora_phase2 \\
        [--out exp/lap_lora_phase2_merged] [--model_path exp/.../models/model_10.pt]

Reads ``config.yaml`` (with ``lora_args``) and the weights of ``--model_dir``
(``avg_model.pt`` first, see ``models/inference.resolve_model_dir``), checks the
checkpoint's fingerprint against the SSL model the config builds, merges
``(alpha / rank) B A`` into each wrapped weight (peft's merge) and writes to
``--out`` (default ``<model_dir>_merged``):

* ``config.yaml``: the same config without ``lora_args``;
* ``frontend.json``: the source's frozen-model fingerprint, when it has one;
* ``avg_model.pt``: the merged SSL weights (``frontend.*``), the backend and the
  training head, as a full fine-tune (phase 2) checkpoint holds them.

Extraction, the ``wespeaker-lap`` command and export load it like any other
model directory. (They also load the LoRA directory itself, merging on the fly.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from wespeaker_lap.frontend.fingerprint import FINGERPRINT_FILE, resolve_frontend_args
from wespeaker_lap.frontend.lora import parse_lora_args
from wespeaker_lap.io.checkpoints import read_weights, save_weights
from wespeaker_lap.io.files import atomic_write, read_yaml
from wespeaker_lap.models.extractor import FRONTEND_PREFIX
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("wespeaker_lap.merge_lora")


def merge_model_dir(model_dir: str | Path, out: str | Path,
                    model_path: str | Path | None = None) -> Path:
    """Write the merged model directory ``out``; returns its weights file.

    Loading goes through :func:`~wespeaker_lap.models.inference.load_trained_extractor`
    (relative SSL paths resolved against ``model_dir``, its ``frontend.json``
    checked, the checkpoint's LoRA fingerprint checked, LoRA merged on load).
    """
    config_path, weights = resolve_model_dir(model_dir)
    if model_path is not None:
        weights = Path(model_path)
    cfg = read_yaml(config_path)
    if parse_lora_args(cfg.get("lora_args")) is None:
        raise ValueError(f"{config_path} has no lora_args: {model_dir} is not a LoRA model")
    out = Path(out)
    if (out / "config.yaml").exists():
        raise FileExistsError(f"{out} already holds a model directory; choose another --out")
    state = read_weights(weights)
    extractor = load_trained_extractor(config_path, weights, dtype="float32")
    merged = {FRONTEND_PREFIX + k: v.detach().to("cpu", copy=True)
              for k, v in extractor.frontend.state_dict().items()}
    merged.update({k: v.detach().cpu().clone() for k, v in extractor.state_dict().items()
                   if not k.startswith(FRONTEND_PREFIX)})
    merged.update({k: v for k, v in state.items() if k.startswith("projection.")})

    plain = {k: v for k, v in cfg.items() if k != "lora_args"}
    # the SSL model as this directory found it (absolute): `out` may live elsewhere
    plain["frontend_args"] = resolve_frontend_args(cfg.get("frontend_args") or {},
                                                   config_path.parent, where=str(config_path))
    out.mkdir(parents=True, exist_ok=True)
    dst = save_weights(merged, out / "avg_model.pt")
    if (config_path.parent / FINGERPRINT_FILE).is_file():
        with atomic_write(out / FINGERPRINT_FILE) as f:
            f.write((config_path.parent / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    with atomic_write(out / "config.yaml") as f:
        f.write(f"# LoRA merged into the SSL weights by wespeaker_lap.bin.merge_lora from "
                f"{weights}\n# lora_args were: {cfg['lora_args']}\n")
        yaml.safe_dump(plain, f, sort_keys=False, default_flow_style=False)
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="a LoRA experiment directory")
    p.add_argument("--out", default=None, help="output model directory "
                   "(default: <model_dir>_merged)")
    p.add_argument("--model_path", default=None,
                   help="weights to merge (default: the model_dir's avg_model.pt, ...)")
    args = p.parse_args(argv)
    setup_logging()
    out = args.out or str(Path(args.model_dir)).rstrip("/") + "_merged"
    try:
        dst = merge_model_dir(args.model_dir, out, args.model_path)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        logger.error("%s", e)
        return 1
    logger.info("wrote %s and %s", dst, Path(out) / "config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
