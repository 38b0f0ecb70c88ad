"""Make a Kaldi data dir valid in place (Kaldi's fix_data_dir.sh) and report what was dropped.

    python -m wespeaker_lap.bin.fix_data_dir data/train
    python -m wespeaker_lap.bin.fix_data_dir --check-audio --utt2dur data/train

Keeps the utterances present in wav.scp, utt2spk and every other utt2* file,
sorts everything (LC_ALL=C), regenerates spk2utt. Originals go to
<data_dir>/.backup/ (a later run that changes something: .backup.1/, .backup.2/,
...), the dropped keys to dropped_utts in that folder; a valid dir is left as
it is. Kaldi piped wav.scp entries ("cmd |") are kept; --check-audio and
--utt2dur refuse them unless --allow_pipes (then --utt2dur runs them).
With a Kaldi segments file, wav.scp is keyed by recording and the segments are
the utterances; bad segment lines (overlapping, out of range, an unknown
recording) are dropped. A dir is never left empty: when nothing would be left,
nothing is changed and the reason is printed (exit 1).
"""

from __future__ import annotations

import argparse
import sys

from wespeaker_lap.dataset.datadir import fix_data_dir
from wespeaker_lap.utils.logging_utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--check_audio", "--check-audio", action="store_true",
                   help="also drop utterances whose audio file does not exist")
    p.add_argument("--utt2dur", action="store_true",
                   help="(re)compute utt2dur from the audio headers; unreadable ones are dropped")
    p.add_argument("--nj", type=int, default=4, help="threads for file checks")
    p.add_argument("--allow_pipes", "--allow-pipes", action="store_true",
                   help="run Kaldi piped wav.scp entries ('cmd |') with a shell, as Kaldi does")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        report = fix_data_dir(args.data_dir, check_audio=args.check_audio,
                              utt2dur=args.utt2dur, num_threads=args.nj,
                              allow_pipes=args.allow_pipes)
    except (OSError, ValueError) as e:
        print(f"fix_data_dir: {e}", file=sys.stderr)
        return 1
    print(f"fix_data_dir: {args.data_dir}: {report.summary()}")
    if report.kept == 0:
        print("fix_data_dir: no utterances left", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
