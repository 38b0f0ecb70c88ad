"""Cosine scoring of trial lists after mean subtraction.

Each trial file becomes ``<output-dir>/<trial file name>.score`` with lines
``enroll test score [target|nontarget]``. Trials may be Kaldi
(``enroll test target|nontarget`` or unlabeled ``enroll test``) or VoxCeleb
(``1|0 enroll test``), detected per file unless ``--trial-format`` is given.

Example::

    python -m wespeaker_lap.bin.score \\
        --embeddings exp/embeddings/vox1/xvector.scp \\
        --mean-vec exp/embeddings/vox2_dev/mean_vec.npy \\
        --trials data/vox1/trials/vox1_O_cleaned.kaldi data/vox1/trials/vox1_E_cleaned.kaldi \\
        --output-dir exp/scores
"""

from __future__ import annotations

import argparse
import logging
import sys

from wespeaker_lap.bin.common import add_allow_missing, add_log_level, add_print_paths, run
from wespeaker_lap.scoring.score import (
    TRIAL_FORMATS,
    score_files,
    score_output_paths,
)

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wespeaker_lap.bin.score",
        description="Mean-subtracted cosine scoring of one or more trial lists.",
    )
    p.add_argument("--embeddings", nargs="+",
                   help="Kaldi xvector.scp file(s) holding the embeddings of all trial utterances")
    p.add_argument("--mean_vec", "--mean-vec", default=None,
                   help="mean_vec.npy subtracted from every embedding (usually the training mean); "
                        "omit for plain cosine")
    p.add_argument("--trials", nargs="+", required=True, help="trial list file(s)")
    p.add_argument("--output_dir", "--output-dir", required=True,
                   help="directory for the score files (<trial file name>.score)")
    p.add_argument("--trial_format", "--trial-format", choices=TRIAL_FORMATS, default="auto",
                   help="trial format: kaldi 'enroll test target|nontarget', voxceleb "
                        "'1|0 enroll test', or auto-detect per file (default)")
    add_allow_missing(p, "trials naming utterances")
    add_print_paths(p, "trial list")
    add_log_level(p)
    return p


def _score(args: argparse.Namespace) -> None:
    if args.print_paths:
        outs = score_output_paths(args.trials, args.output_dir)
    elif not args.embeddings:
        raise ValueError("--embeddings is required (except with --print_paths)")
    else:
        outs = score_files(args.embeddings, args.trials, args.output_dir, args.mean_vec,
                           args.trial_format, args.allow_missing)
    for out in outs:
        print(out)


def main(argv: list[str] | None = None) -> int:
    return run(_score, get_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
