"""Average the last N ``model_{epoch}.pt`` checkpoints into one (WeSpeaker's stage 4).

    python -m wespeaker_lap.bin.average_model \\
        --dst_model exp/lap/models/avg_model.pt --src_path exp/lap/models --num 10

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

from wespeaker_lap.utils.logging_utils import setup_logging
from wespeaker_lap.utils.training_state import average_checkpoints

logger = logging.getLogger("wespeaker_lap.average_model")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dst_model", required=True, help="output file, e.g. models/avg_model.pt")
    p.add_argument("--src_path", required=True, help="the models/ directory of an experiment")
    p.add_argument("--num", type=int, default=10, help="how many of the last checkpoints")
    p.add_argument("--min_epoch", type=int, default=0, help="ignore epochs below this")
    p.add_argument("--max_epoch", type=int, default=None, help="ignore epochs above this")
    args = p.parse_args(argv)
    setup_logging()
    try:
        used = average_checkpoints(args.src_path, args.num, args.dst_model,
                                   min_epoch=args.min_epoch, max_epoch=args.max_epoch)
    except (OSError, ValueError) as e:  # a missing or foreign checkpoint, a full disk (named)
        logger.error("%s", e)
        return 1
    logger.info("averaged %d checkpoints (%s) into %s", len(used),
                ", ".join(u.name for u in used), args.dst_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
