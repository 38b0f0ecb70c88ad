"""AS-norm / S-norm of score files against a cohort of embeddings.

``x.score`` becomes ``x.asnorm<N>.score`` (``x.snorm.score``), beside the input
or in ``--output-dir``. The cohort is mean-subtracted like the trials; with
``--cohort-utt2spk`` it is one speaker-mean embedding per speaker.

Example (WeSpeaker's stage 6)::

    python -m wespeaker_lap.bin.score_norm \\
        --scores exp/scores/vox1_O_cleaned.kaldi.score \\
        --embeddings exp/embeddings/vox1/xvector.scp \\
        --cohort-embeddings exp/embeddings/vox2_dev/xvector.scp \\
        --cohort-utt2spk data/vox2_dev/utt2spk \\
        --mean-vec exp/embeddings/vox2_dev/mean_vec.npy --top-n 300
"""

from __future__ import annotations

import argparse
import logging
import sys

from wespeaker_lap.scoring.score import MissingEmbeddingError
from wespeaker_lap.scoring.score_norm import (
    NORM_METHODS,
    norm_output_paths,
    normalize_score_files,
)
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wespeaker_lap.bin.score_norm",
        description="Adaptive symmetric score normalisation (AS-norm) or S-norm of score files.",
    )
    p.add_argument("--scores", nargs="+", required=True,
                   help="score file(s) 'enroll test score [label]' from bin.score")
    p.add_argument("--embeddings", nargs="+",
                   help="xvector.scp file(s) of the evaluation utterances")
    p.add_argument("--cohort_embeddings", "--cohort-embeddings", nargs="+",
                   help="xvector.scp file(s) of the cohort utterances (e.g. VoxCeleb2 dev)")
    p.add_argument("--cohort_utt2spk", "--cohort-utt2spk", default=None,
                   help="utt2spk of the cohort: average each speaker's embeddings into one "
                        "cohort entry (default: one entry per utterance)")
    p.add_argument("--mean_vec", "--mean-vec", default=None,
                   help="mean_vec.npy subtracted from evaluation and cohort embeddings")
    p.add_argument("--method", choices=list(NORM_METHODS), default="asnorm",
                   help="asnorm: top-N cohort scores per side; snorm: the whole cohort")
    p.add_argument("--top_n", "--top-n", type=int, default=300,
                   help="number of top cohort scores for AS-norm (default 300)")
    p.add_argument("--output_dir", "--output-dir", default=None,
                   help="directory for the normalised score files (default: beside each input)")
    p.add_argument("--allow_missing", "--allow-missing", action="store_true",
                   help="skip trials (and cohort utterances) without embedding instead of failing")
    p.add_argument("--print_paths", "--print-paths", action="store_true",
                   help="only print the output file each score file maps to, one a line")
    p.add_argument("--log_level", "--log-level", default="INFO",
                   help="logging level (default INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.print_paths:
            for out in norm_output_paths(args.scores, args.method, args.top_n, args.output_dir):
                print(out)
            return 0
        if not args.embeddings or not args.cohort_embeddings:
            raise ValueError("--embeddings and --cohort_embeddings are required "
                             "(except with --print_paths)")
        outs = normalize_score_files(
            args.scores, args.embeddings, args.cohort_embeddings, args.mean_vec,
            args.cohort_utt2spk, args.top_n, args.method, args.output_dir, args.allow_missing,
        )
    except (ValueError, OSError, MissingEmbeddingError) as e:
        logger.error("%s", e)
        return 1
    for out in outs:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
