"""Plot LAP layer attention (per head and layer) beside SUPERB layer weights.

Inputs are ``.npy`` arrays: the LAP scores ``(heads, L)``, or with leading axes
(e.g. ``(utterances, heads, L)``) that are averaged away; and optionally the
SUPERB weights ``(L,)`` of a comparison model (softmax weights, or raw logits
with ``--superb-logits``).

Example::

    python -m wespeaker_lap.bin.plot_layers --lap-scores exp/lap/layer_scores.npy \\
        --superb-weights exp/superb/layer_weights.npy --out exp/lap/layers.png
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from wespeaker_lap.scoring.plotting import plot_layer_attention
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wespeaker_lap.bin.plot_layers",
        description="Heatmap of LAP layer scores per head beside SUPERB layer weights.",
    )
    p.add_argument("--lap_scores", "--lap-scores", required=True,
                   help=".npy of LAP layer scores, (heads, L) or (..., heads, L) averaged over "
                        "the leading axes")
    p.add_argument("--superb_weights", "--superb-weights", default=None,
                   help=".npy of the (L,) SUPERB layer weights of a comparison model")
    p.add_argument("--superb_logits", "--superb-logits", action="store_true",
                   help="--superb-weights holds raw logits: apply a softmax first")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--log_level", "--log-level", default="INFO",
                   help="logging level (default INFO)")
    return p


def _load(path: str, what: str) -> np.ndarray:
    try:
        return np.asarray(np.load(path), dtype=np.float64)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read {what}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        lap = _load(args.lap_scores, "LAP scores")
        if lap.ndim < 2:
            raise ValueError(f"{args.lap_scores}: LAP scores need (heads, L), got {lap.shape}")
        if lap.ndim > 2:
            lap = lap.reshape(-1, *lap.shape[-2:]).mean(axis=0)
        sup = None
        if args.superb_weights:
            sup = _load(args.superb_weights, "SUPERB weights").reshape(-1)
            if args.superb_logits:
                sup = np.exp(sup - sup.max())
                sup /= sup.sum()
        plot_layer_attention(lap, sup, args.out, title=args.title)
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return 1
    logger.info("layer attention plot -> %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
