"""EER of score files against a reference one, with a paired speaker-bootstrap interval.

    python benchmarks/eer_change.py --utt2spk data/test/utt2spk \\
        "PyTorch fp32=exp/x/scores/trials.kaldi.score" "ORT int8=exp/y/scores/trials.kaldi.score"

The first ``NAME=FILE`` is the reference. Every file must hold the same labelled
trials in the same order (``bin/score`` / ``bin/score_norm`` write them in the
trial list's order). Prints a Markdown row per file: EER with its speaker-bootstrap
95 % interval and its change against the reference with a paired interval
(``bench_onnx.paired_eer_changes``: each replicate draws one set of speakers for
all files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_onnx import paired_eer_changes

from wespeaker_lap.io.files import read_table
from wespeaker_lap.scoring.bootstrap import bootstrap_metrics
from wespeaker_lap.scoring.score import read_scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utt2spk", required=True, type=Path)
    p.add_argument("--num_boot", type=int, default=1000)
    p.add_argument("--label", default="", help="first column of every row (e.g. the set)")
    p.add_argument("files", nargs="+", help="NAME=SCORE_FILE, the reference first")
    args = p.parse_args(argv)
    utt2spk = dict(read_table(args.utt2spk))
    scores, ref = {}, None
    for item in args.files:
        name, sep, path = item.partition("=")
        if not sep:
            p.error(f"expected NAME=SCORE_FILE, got {item!r}")
        trials, s = read_scores(path, require_labels=True)
        if ref is None:
            ref = trials
        elif trials.enroll != ref.enroll or trials.test != ref.test:
            p.error(f"{path}: not the same trials, in the same order, as {args.files[0]}")
        scores[name] = s
    e_spk = [utt2spk[u] for u in ref.enroll]
    t_spk = [utt2spk[u] for u in ref.test]
    first = next(iter(scores))
    changes = paired_eer_changes(scores, ref.labels, e_spk, t_spk, first, args.num_boot)
    for name, s in scores.items():
        r = bootstrap_metrics(s, ref.labels, e_spk, t_spk, num_boot=args.num_boot)
        c, lo, hi = changes[name]
        print(f"| {args.label} | {name} | {100 * r['eer']:.2f} [{100 * r['eer_ci'][0]:.2f}, "
              f"{100 * r['eer_ci'][1]:.2f}] | {c:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
