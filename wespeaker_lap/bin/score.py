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

from wespeaker_lap.scoring.score import (
    TRIAL_FORMATS,
    MissingEmbeddingError,
    score_files,
    score_output_paths,
)
from wespeaker_lap.utils.logging_utils import setup_logging

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
    p.add_argument("--allow_missing", "--allow-missing", action="store_true",
                   help="skip trials naming utterances without embedding (and report the count) "
                        "instead of failing")
    p.add_argument("--print_paths", "--print-paths", action="store_true",
                   help="only print the score file each trial list maps to, one a line "
                        "(recipes use this to find the files an earlier stage wrote)")
    p.add_argument("--log_level", "--log-level", default="INFO",
                   help="logging level (default INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.print_paths:
            for out in score_output_paths(args.trials, args.output_dir):
                print(out)
            return 0
        if not args.embeddings:
            raise ValueError("--embeddings is required (except with --print_paths)")
        outs = score_files(
            args.embeddings, args.trials, args.output_dir, args.mean_vec,
            args.trial_format, args.allow_missing,
        )
    except (ValueError, OSError, MissingEmbeddingError) as e:
        logger.error("%s", e)
        return 1
    for out in outs:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
