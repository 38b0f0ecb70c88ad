"""Where a system's errors are: EER on subsets of the synthesized corpus's trials.

    python local/trial_breakdown.py --speakers corpus/data/../speakers.tsv \\
        --set test corpus/data/test exp/x/scores/trials.kaldi.asnorm100.score \\
        --set test_unseen corpus/data/test_unseen exp/x/scores/test_unseen/...score

Each ``--set NAME DATA_DIR SCORES`` names a test set, its data dir (``utt2spk`` and
the corpus's ``utt2channel``: ``clean`` or the degradations applied; without it the
clean / degraded rows are left out) and a labelled
score file (``enroll test score target|nontarget``). Prints, per set, the EER of:

- all trials;
- all target trials against the non-targets whose two speakers come from *other*
  source voices, and against those from the *same* source voice (the speakers the
  corpus made from one TTS voice by perturbing pitch, vocal-tract length and timbre;
  for espeak-ng the voice variant, e.g. ``klatt2``, for flite and festival the voice);
- the trials where both sides are clean, one side is degraded, both are degraded;
- the trials within each source voice (both sides from speakers of that voice),
  for the voices with at least ``--min_nontargets`` such non-target trials.

A row with no target or no non-target trial is left out.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from score_ci import read_labelled_scores

from wespeaker_lap.io.files import read_table
from wespeaker_lap.scoring.metrics import compute_eer


def source_voices(speakers_tsv: Path) -> dict[str, str]:
    """speaker -> ``engine:voice`` its timbre comes from (``espeak:<variant>`` for espeak-ng)."""
    with open(speakers_tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    need = {"spk", "engine", "voice", "variant"}
    if not rows or not need <= set(rows[0]):
        raise SystemExit(f"{speakers_tsv}: expected a header with columns {sorted(need)}")
    out = {}
    for r in rows:
        name = r["variant"] if r["engine"] == "espeak" and r["variant"] not in ("", "-") \
            else r["voice"]
        out[r["spk"]] = f"{r['engine']}:{name}"
    return out


def subset_masks(enroll, test, labels, utt_voice, channel) -> list[tuple[str, np.ndarray]]:
    """(row name, boolean mask over the trials) for one set's trials."""
    v_e = np.array([utt_voice[u] for u in enroll])
    v_t = np.array([utt_voice[u] for u in test])
    target = labels == 1
    rows = [("all trials", np.ones(len(labels), bool)),
            ("targets vs non-targets of other source voices", target | (v_e != v_t)),
            ("targets vs non-targets of the same source voice", target | (v_e == v_t))]
    if channel is not None:
        n_clean = (np.array([channel[u] == "clean" for u in enroll], int)
                   + np.array([channel[u] == "clean" for u in test], int))
        rows += [("both sides clean", n_clean == 2), ("one side degraded", n_clean == 1),
                 ("both sides degraded", n_clean == 0)]
    for v in sorted(set(v_e)):
        rows.append((f"within {v}", (v_e == v) & (v_t == v)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--speakers", required=True, help="the corpus's speakers.tsv")
    p.add_argument("--set", nargs=3, action="append", required=True,
                   metavar=("NAME", "DATA_DIR", "SCORES"))
    p.add_argument("--min_nontargets", type=int, default=50,
                   help="per-voice rows need this many non-target trials")
    args = p.parse_args(argv)
    voices = source_voices(Path(args.speakers))
    print("| test set | trials | targets | non-targets | EER (%) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, data_dir, score_path in args.set:
        utt2spk = dict(read_table(Path(data_dir) / "utt2spk"))
        chan_file = Path(data_dir) / "utt2channel"
        channel = dict(read_table(chan_file)) if chan_file.is_file() else None
        if channel is None:  # a corpus from before utt2channel: no clean/degraded rows
            print(f"{chan_file}: missing, so no clean / degraded rows", file=sys.stderr)
        enroll, test, scores, labels = read_labelled_scores(Path(score_path))
        for u in enroll + test:
            if u not in utt2spk or (channel is not None and u not in channel):
                raise SystemExit(f"{score_path}: utterance {u!r} not in {data_dir}/utt2spk "
                                 "or utt2channel")
            if utt2spk[u] not in voices:
                raise SystemExit(f"{score_path}: speaker {utt2spk[u]!r} of {u!r} not in "
                                 f"{args.speakers}")
        utt_voice = {u: voices[utt2spk[u]] for u in set(enroll + test)}
        for row, m in subset_masks(enroll, test, labels, utt_voice, channel):
            n_tar = int(labels[m].sum())
            n_non = int(m.sum()) - n_tar
            if n_tar == 0 or n_non == 0 or (row.startswith("within ")
                                            and n_non < args.min_nontargets):
                continue
            eer = compute_eer(scores[m], labels[m])[0]
            print(f"| {name} | {row} | {n_tar} | {n_non} | {100 * eer:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
