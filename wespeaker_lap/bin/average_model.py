"""Average N ``model_{epoch}.pt`` checkpoints into one (WeSpeaker's stage 4).

    python -m wespeaker_lap.bin.average_model \\
        --dst_model exp/lap/models/avg_model.pt --src_path exp/lap/models --num 10
    python -m wespeaker_lap.bin.average_model --select best_valid --num 3 \\
        --dst_model exp/lap/models/avg_model.pt --src_path exp/lap/models

``--select last`` (the default) averages the last N; ``--select best_valid`` the N
epochs with the lowest validation EER in the experiment's ``train_log.jsonl``
(``--train_log``, default ``SRC_PATH/../train_log.jsonl``) among those whose
``model_{epoch}.pt`` exists (ties: the later epoch); a log without validation
records is an error. With ``keep_best K`` in training, ``--num`` up to K finds
its files.

Floating tensors are averaged (in float64); integer buffers (BatchNorm's
``num_batches_tracked``) come from the newest checkpoint. ``--min_epoch`` /
``--max_epoch`` restrict the epochs considered. The output is written
atomically and loads like any ``model_{epoch}.pt``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from wespeaker_lap.io.train_log import TRAIN_LOG, read_train_log, valid_epochs
from wespeaker_lap.utils.logging_utils import setup_logging
from wespeaker_lap.utils.training_state import average_checkpoints

logger = logging.getLogger("wespeaker_lap.average_model")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dst_model", required=True, help="output file, e.g. models/avg_model.pt")
    p.add_argument("--src_path", required=True, help="the models/ directory of an experiment")
    p.add_argument("--num", type=int, default=10, help="how many checkpoints to average")
    p.add_argument("--select", choices=("last", "best_valid"), default="last",
                   help="last: the last NUM epochs; best_valid: the NUM epochs with the lowest "
                   "validation EER in train_log.jsonl")
    p.add_argument("--train_log", default=None,
                   help=f"the experiment's {TRAIN_LOG} (default: SRC_PATH/../{TRAIN_LOG})")
    p.add_argument("--min_epoch", type=int, default=0, help="ignore epochs below this")
    p.add_argument("--max_epoch", type=int, default=None, help="ignore epochs above this")
    args = p.parse_args(argv)
    setup_logging()
    try:
        eers = None
        if args.select == "best_valid":
            log = Path(args.train_log or Path(args.src_path).parent / TRAIN_LOG)
            if not log.is_file():
                raise FileNotFoundError(f"--select best_valid: no {log} (written by bin/train)")
            eers = valid_epochs(read_train_log(log))
            if not eers:
                raise ValueError(f"--select best_valid: {log} has no validation record; train "
                                 "with --valid_data and --valid_trials, or use --select last")
        used = average_checkpoints(args.src_path, args.num, args.dst_model,
                                   min_epoch=args.min_epoch, max_epoch=args.max_epoch,
                                   valid_eers=eers)
    except (OSError, ValueError) as e:  # a missing or foreign checkpoint, a full disk (named)
        logger.error("%s", e)
        return 1
    logger.info("averaged %d checkpoints (%s, --select %s) into %s", len(used),
                ", ".join(u.name for u in used), args.select, args.dst_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
