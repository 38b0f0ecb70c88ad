"""Training curves and layer use against the epoch, from an experiment's ``train_log.jsonl``.

    python -m wespeaker_lap.bin.plot_training exp/lap

writes ``exp/lap/training.png`` (loss, accuracy, learning rate, margin and the
validation EER against the epoch) and, when the log has validated epochs with
layer scores, ``exp/lap/layer_use.png`` (a heatmap of the backend's layer use on
the validation set, one row per validated epoch). ``--out_dir`` writes them
elsewhere. Exit status 1 when the log is missing or holds no finished epoch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from wespeaker_lap.io.train_log import TRAIN_LOG, read_train_log
from wespeaker_lap.scoring.plotting import plot_layer_use, plot_training_curves
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("wespeaker_lap.plot_training")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dir", help="the experiment directory (holds train_log.jsonl)")
    p.add_argument("--out_dir", default=None, help="where to write the PNGs (default: exp_dir)")
    args = p.parse_args(argv)
    setup_logging()
    exp = Path(args.exp_dir)
    out = Path(args.out_dir) if args.out_dir else exp
    log = exp / TRAIN_LOG
    try:
        if not log.is_file():
            raise FileNotFoundError(f"no {TRAIN_LOG} in {exp} (written by bin/train)")
        records = read_train_log(log)
        out.mkdir(parents=True, exist_ok=True)
        plot_training_curves(records, out / "training.png", title=str(exp))
        logger.info("wrote %s", out / "training.png")
        use = [(r["epoch"], r["layer_use"]["scores"]) for r in records
               if r.get("kind") == "epoch" and isinstance(r.get("layer_use"), dict)]
        if use:
            plot_layer_use([e for e, _ in use], [s for _, s in use], out / "layer_use.png",
                           title=f"{exp}: layer use on the validation set")
            logger.info("wrote %s", out / "layer_use.png")
        else:
            logger.warning("%s has no layer use records (no validation): no layer_use.png", log)
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
