"""Check a Kaldi data dir (Kaldi's validate_data_dir.sh); exit 1 and name the bad lines.

    python -m wespeaker_lap.bin.validate_data_dir data/train
    python -m wespeaker_lap.bin.validate_data_dir --decode --min-duration 0.5 data/train

Checks: wav.scp, utt2spk and spk2utt present; lines well formed; each file
sorted (LC_ALL=C) with unique keys; utt2spk and spk2utt agree; wav.scp,
utt2spk (and utt2dur) list the same utterances; every audio path exists; at
least one utterance. With a Kaldi ``segments`` file (wav.scp keyed by
recording): its lines are well formed, name a recording of wav.scp, do not
overlap, and lie inside the recording.
``--decode`` also decodes every file and lists all bad ones. Kaldi piped
entries (``cmd |``) are problems unless ``--allow_pipes`` (then ``--decode``
runs them).
"""

from __future__ import annotations

import argparse
import sys

from wespeaker_lap.dataset.datadir import read_data_dir, validate_data_dir
from wespeaker_lap.utils.logging_utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--no_check_audio", "--no-check-audio", action="store_true",
                   help="skip the audio path checks")
    p.add_argument("--decode", action="store_true", help="decode every file, list all bad ones")
    p.add_argument("--min_duration", "--min-duration", type=float, default=0.0,
                   help="with --decode: shorter files are bad (seconds)")
    p.add_argument("--nj", type=int, default=4, help="threads for file checks")
    p.add_argument("--max_report", "--max-report", type=int, default=5,
                   help="lines shown per kind of problem")
    p.add_argument("--allow_pipes", "--allow-pipes", action="store_true",
                   help="run Kaldi piped wav.scp entries ('cmd |') with a shell, as Kaldi does")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.min_duration < 0:
        parser.error(f"--min_duration must be >= 0 seconds, got {args.min_duration:g}")
    if args.nj < 1 or args.max_report < 1:
        parser.error("--nj and --max_report must be >= 1")
    setup_logging()
    problems = validate_data_dir(args.data_dir, check_audio=not args.no_check_audio,
                                 decode=args.decode, min_duration=args.min_duration,
                                 num_threads=args.nj, max_report=args.max_report,
                                 allow_pipes=args.allow_pipes)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        print(f"validate_data_dir: {args.data_dir} is NOT valid ({len(problems)} problem lines)",
              file=sys.stderr)
        return 1
    try:
        data = read_data_dir(args.data_dir)
    except (OSError, ValueError) as e:
        print(f"validate_data_dir: {e}", file=sys.stderr)
        return 1
    print(f"validate_data_dir: {args.data_dir} OK: {len(data.utts)} utterances, "
          f"{len(data.speakers)} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
