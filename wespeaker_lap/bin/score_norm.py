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

While it runs, numpy's ``madvise(MADV_HUGEPAGE)`` of large arrays is off
(:func:`no_numpy_hugepages`): under transparent huge pages in ``madvise`` mode
the kernel then zeroes (and, on a fragmented machine, compacts memory for) a
2 MiB page at each fault of the trial-sized temporaries, which cost more system
time than the faults it saves (``benchmarks/README.md``). ``NUMPY_MADVISE_HUGEPAGE``
in the environment, numpy's own switch, overrides this.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from wespeaker_lap.bin.common import add_allow_missing, add_log_level, add_print_paths, run
from wespeaker_lap.scoring.score_norm import (
    DEFAULT_TOP_N,
    NORM_METHODS,
    norm_output_paths,
    normalize_score_files,
)

try:  # numpy >= 2; a private function, hence guarded (another numpy: nothing changes)
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # pragma: no cover
    _set_madvise_hugepage = None

logger = logging.getLogger(__name__)

#: numpy's own switch of the huge-page advice; when the user sets it, it wins.
HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"


@contextmanager
def no_numpy_hugepages() -> Iterator[None]:
    """numpy's huge-page ``madvise`` of new arrays off inside the block, restored after;
    nothing changes when ``NUMPY_MADVISE_HUGEPAGE`` is set or numpy lacks the switch."""
    if _set_madvise_hugepage is None or HUGEPAGE_ENV in os.environ:
        yield
        return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)


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
    p.add_argument("--top_n", "--top-n", type=int, default=DEFAULT_TOP_N,
                   help=f"number of top cohort scores for AS-norm (default {DEFAULT_TOP_N})")
    p.add_argument("--output_dir", "--output-dir", default=None,
                   help="directory for the normalised score files (default: beside each input)")
    add_allow_missing(p, "trials (and cohort utterances)")
    add_print_paths(p, "score file")
    add_log_level(p)
    return p


def _normalize(args: argparse.Namespace) -> None:
    if args.print_paths:
        outs = norm_output_paths(args.scores, args.method, args.top_n, args.output_dir)
    elif not args.embeddings or not args.cohort_embeddings:
        raise ValueError("--embeddings and --cohort_embeddings are required "
                         "(except with --print_paths)")
    else:
        outs = normalize_score_files(
            args.scores, args.embeddings, args.cohort_embeddings, args.mean_vec,
            args.cohort_utt2spk, args.top_n, args.method, args.output_dir, args.allow_missing,
        )
    for out in outs:
        print(out)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    with no_numpy_hugepages():
        return run(_normalize, args)


if __name__ == "__main__":
    sys.exit(main())
