"""QMF calibration: fit a logistic regression on a labelled score file, apply it to others.

``fit`` writes the model as JSON; ``apply`` turns ``x.score`` into
``x.qmf.score`` holding calibrated log-likelihood ratios. The quality
measures (``--features``) are the score, both log durations, both raw
embedding norms and both top-N cohort means (the AS-norm ``mu``).

Example (WeSpeaker's stage 7)::

    python -m wespeaker_lap.bin.calibrate fit \\
        --scores exp/scores/vox2_cal.kaldi.asnorm300.score \\
        --embeddings exp/embeddings/vox2_dev/xvector.scp --utt2dur data/vox2_dev/utt2dur \\
        --cohort-embeddings exp/embeddings/vox2_dev/xvector.scp \\
        --cohort-utt2spk data/vox2_dev/utt2spk --mean-vec exp/embeddings/vox2_dev/mean_vec.npy \\
        --model exp/scores/qmf.json
    python -m wespeaker_lap.bin.calibrate apply --model exp/scores/qmf.json \\
        --scores exp/scores/vox1_O_cleaned.kaldi.asnorm300.score \\
        --embeddings exp/embeddings/vox1/xvector.scp --utt2dur data/vox1/utt2dur \\
        --cohort-embeddings exp/embeddings/vox2_dev/xvector.scp \\
        --cohort-utt2spk data/vox2_dev/utt2spk --mean-vec exp/embeddings/vox2_dev/mean_vec.npy
"""

from __future__ import annotations

import argparse
import logging
import sys

from wespeaker_lap.bin.common import add_allow_missing, add_log_level, run
from wespeaker_lap.scoring.calibration import (
    DEFAULT_FEATURES,
    TRIAL_FEATURES,
    QMFCalibrator,
    apply_qmf_files,
    fit_qmf_file,
    load_quality_sources,
)
from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N

logger = logging.getLogger(__name__)


def _add_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", nargs="+", default=None,
                   help="xvector.scp file(s) of the trial utterances (for norm_* and "
                        "cohort_mean_* features)")
    p.add_argument("--utt2dur", nargs="+", default=None,
                   help="Kaldi utt2dur file(s), seconds per utterance (for log_dur_* features)")
    p.add_argument("--cohort_embeddings", "--cohort-embeddings", nargs="+", default=None,
                   help="xvector.scp file(s) of the cohort (for cohort_mean_* features)")
    p.add_argument("--cohort_utt2spk", "--cohort-utt2spk", default=None,
                   help="utt2spk of the cohort: one speaker-mean embedding per speaker")
    p.add_argument("--mean_vec", "--mean-vec", default=None,
                   help="mean_vec.npy subtracted before the cohort scores")
    add_allow_missing(p, "trials whose utterances lack a duration or are")
    add_log_level(p)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wespeaker_lap.bin.calibrate",
        description="Quality-measure (QMF) calibration of verification scores.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a QMF model on a labelled score file")
    fit.add_argument("--scores", required=True,
                     help="labelled calibration score file (enroll test score target|nontarget)")
    fit.add_argument("--model", required=True, help="output JSON model")
    fit.add_argument("--features", nargs="+", default=list(DEFAULT_FEATURES),
                     choices=TRIAL_FEATURES, metavar="FEATURE",
                     help=f"quality measures, from {', '.join(TRIAL_FEATURES)} (default: all)")
    fit.add_argument("--top_n", "--top-n", type=int, default=DEFAULT_TOP_N,
                     help=f"top-N cohort scores for cohort_mean_* (default {DEFAULT_TOP_N})")
    fit.add_argument("--p_target", "--p-target", type=float, default=0.5,
                     help="prior that weighs targets vs nontargets in the fit (default 0.5: Cllr)")
    fit.add_argument("--l2", type=float, default=1e-4,
                     help="L2 penalty on the standardised weights (default 1e-4)")
    _add_sources(fit)
    app = sub.add_parser("apply", help="apply a fitted QMF model to score files")
    app.add_argument("--model", required=True, help="JSON model from 'fit'")
    app.add_argument("--scores", nargs="+", required=True, help="score file(s) to calibrate")
    app.add_argument("--output_dir", "--output-dir", default=None,
                     help="directory for <stem>.qmf.score (default: beside each input)")
    _add_sources(app)
    return p


def _calibrate(args: argparse.Namespace) -> None:
    if args.command == "fit":
        sources = load_quality_sources(
            args.features, args.embeddings, args.mean_vec, args.cohort_embeddings,
            args.cohort_utt2spk, args.top_n, args.utt2dur, args.allow_missing,
        )
        model = fit_qmf_file(
            args.scores, sources, args.features, args.p_target, args.l2, args.allow_missing
        )
        model.save(args.model)
        logger.info("QMF model -> %s", args.model)
        return
    model = QMFCalibrator.load(args.model)
    sources = load_quality_sources(
        model.features, args.embeddings, args.mean_vec, args.cohort_embeddings,
        args.cohort_utt2spk, model.top_n, args.utt2dur, args.allow_missing,
    )
    for out in apply_qmf_files(model, args.scores, sources, args.output_dir, args.allow_missing):
        print(out)


def main(argv: list[str] | None = None) -> int:
    return run(_calibrate, get_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
