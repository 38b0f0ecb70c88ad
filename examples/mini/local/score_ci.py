"""EER with speaker-bootstrap 95% intervals and minDCF 0.01 / 0.05 of score files.

    python local/score_ci.py [--num_boot 1000] [--json out.json] \\
        --set test data/test/utt2spk exp/x/scores/trials.kaldi.score \\
        --set test_unseen data/test_unseen/utt2spk exp/x/scores/test_unseen/trials.kaldi.score

Each ``--set NAME UTT2SPK SCORES`` names a test set, its utt2spk (to resample
speakers) and a labelled score file (``enroll test score target|nontarget``).
Prints a Markdown table; see ``wespeaker_lap.scoring.bootstrap`` for the method.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from wespeaker_lap.io.files import atomic_write, read_table
from wespeaker_lap.scoring.bootstrap import bootstrap_metrics
from wespeaker_lap.scoring.score import read_scores


def read_labelled_scores(path: Path):
    """(enroll keys, test keys, scores, 0/1 labels) of a labelled score file; a bad
    file exits naming file and line (``wespeaker_lap.scoring.score.read_scores``)."""
    try:
        trials, scores = read_scores(path, require_labels=True)
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
    return trials.enroll, trials.test, scores, trials.labels.astype(np.int64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--set", nargs=3, action="append", required=True,
                   metavar=("NAME", "UTT2SPK", "SCORES"))
    p.add_argument("--num_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write all figures here")
    args = p.parse_args(argv)
    out = {}
    print("| test set | scoring | trials | speakers | EER (%) [95% CI] | minDCF 0.01 | "
          "minDCF 0.05 |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
    for name, utt2spk_path, score_path in args.set:
        utt2spk = dict(read_table(utt2spk_path))
        enroll, test, s, lab = read_labelled_scores(Path(score_path))
        missing = sorted({u for u in enroll + test if u not in utt2spk})
        if missing:
            raise SystemExit(f"{score_path}: {len(missing)} utterances not in {utt2spk_path}, "
                             f"e.g. {missing[0]}")
        r = bootstrap_metrics(s, lab, [utt2spk[u] for u in enroll], [utt2spk[u] for u in test],
                              num_boot=args.num_boot, seed=args.seed)
        scoring = "AS-norm" if ".asnorm" in Path(score_path).name else "cosine"
        lo, hi = r["eer_ci"]
        print(f"| {name} | {scoring} | {r['num_trials']} | {r['num_speakers']} | "
              f"{100 * r['eer']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}] | "
              f"{r['min_dcf_0.01']:.3f} | {r['min_dcf_0.05']:.3f} |")
        out[score_path] = {"set": name, "scoring": scoring, **r}
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
