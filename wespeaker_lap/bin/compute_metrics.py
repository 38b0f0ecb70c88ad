"""EER and minDCF of score files, one summary line per file; optional DET plot.

Score files are ``enroll test score target|nontarget`` (``1|0`` labels also
accepted). minDCF uses C_miss = C_fa = 1 by default and is normalised by
``min(C_miss p, C_fa (1 - p))``.

Example::

    python -m wespeaker_lap.bin.compute_metrics --det-png exp/scores/det.png \\
        exp/scores/vox1_O_cleaned.kaldi.score exp/scores/vox1_O_cleaned.kaldi.asnorm300.score
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from wespeaker_lap.bin.common import add_log_level, run
from wespeaker_lap.checks import ConfigError, check_number
from wespeaker_lap.io.files import atomic_write
from wespeaker_lap.scoring.metrics import compute_metrics, det_curve, format_metrics
from wespeaker_lap.scoring.plotting import plot_det_curves
from wespeaker_lap.scoring.score import read_scores, unique_scores
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wespeaker_lap.bin.compute_metrics",
        description="EER and normalised minDCF of labelled score files.",
    )
    p.add_argument("scores", nargs="+", help="score file(s) with target/nontarget labels")
    p.add_argument("--p_target", "--p-target", type=float, nargs="+", default=[0.01, 0.05],
                   help="target priors for minDCF (default 0.01 0.05)")
    p.add_argument("--c_miss", "--c-miss", type=float, default=1.0,
                   help="cost of a miss (default 1)")
    p.add_argument("--c_fa", "--c-fa", type=float, default=1.0,
                   help="cost of a false alarm (default 1)")
    p.add_argument("--det_png", "--det-png", default=None,
                   help="write a DET curve (probit axes) of all score files to this PNG")
    p.add_argument("--json", default=None, help="also write all metrics to this JSON file")
    add_log_level(p)
    return p


def _check_costs(args: argparse.Namespace) -> None:
    for p in args.p_target:
        check_number("--p_target", p, lo=0, hi=1, lo_open=True, hi_open=True)
    check_number("--c_miss", args.c_miss, lo=0, lo_open=True, hi=float("inf"), hi_open=True)
    check_number("--c_fa", args.c_fa, lo=0, lo_open=True, hi=float("inf"), hi_open=True)


def _metrics(args: argparse.Namespace) -> None:
    results = {}
    curves = {}
    for path in args.scores:
        trials, scores = read_scores(path, require_labels=True)
        trials, scores = unique_scores(trials, scores)  # a repeated line is one trial
        m = compute_metrics(scores, trials.labels, tuple(args.p_target), args.c_miss, args.c_fa)
        results[path] = m
        print(format_metrics(path, m), flush=True)
        if args.det_png:
            p_miss, p_fa, _ = det_curve(scores, trials.labels)
            curves[Path(path).name] = (p_miss, p_fa)
    if args.det_png:
        plot_det_curves(curves, args.det_png)
        logger.info("DET curve -> %s", args.det_png)
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(results, f, indent=2)
            f.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        _check_costs(args)
    except ConfigError as e:
        setup_logging(args.log_level)
        logger.error("%s", e)
        return 2
    return run(_metrics, args)


if __name__ == "__main__":
    sys.exit(main())
