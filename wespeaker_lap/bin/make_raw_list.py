"""Write a raw list (JSON lines) from a data dir, or a noise/RIR list from a folder or data dir.

Training / evaluation list, one ``{"key", "spk", "wav"[, "dur"]}`` a line (a data
dir with Kaldi ``segments``: one line per segment, with ``"start"``/``"end"`` in
seconds)::

    python -m wespeaker_lap.bin.make_raw_list data/train data/train/raw.list \
        [--spk2id data/train/spk2id]

Noise / RIR list, one ``{"key", "wav", "type"}`` a line (SOURCE: a folder of
audio, searched recursively, or a data dir)::

    python -m wespeaker_lap.bin.make_raw_list --type noise musan/noise data/musan_noise.list
    python -m wespeaker_lap.bin.make_raw_list --type babble musan/speech data/musan_babble.list
    python -m wespeaker_lap.bin.make_raw_list --type rir RIRS_NOISES/simulated_rirs data/rir.list
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wespeaker_lap.dataset.datadir import read_data_dir, refuse_segments
from wespeaker_lap.dataset.lists import (
    SOURCE_TYPES,
    make_spk2id,
    raw_entries_from_data_dir,
    source_entries_from_data_dir,
    source_entries_from_folder,
    write_raw_list,
    write_spk2id,
)
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source", help="data dir (wav.scp + utt2spk), or with --type a folder of audio")
    p.add_argument("output", help="list to write (JSON lines)")
    p.add_argument("--type", choices=[*SOURCE_TYPES, "speech", "auto"],
                   help="write a noise/RIR list of this type instead of a speaker list "
                   "(auto: per utterance from the dir's utt2type)")
    p.add_argument("--spk2id", help="also write the speaker index table here")
    return p


def _is_data_dir(path: Path) -> bool:
    return (path / "wav.scp").is_file()


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        return _make(args)
    except (OSError, ValueError) as e:
        print(f"make_raw_list: {e}", file=sys.stderr)
        return 1


def _make(args: argparse.Namespace) -> int:
    src = Path(args.source)
    if args.type:
        if args.spk2id:
            raise SystemExit("make_raw_list: --spk2id goes with speaker lists, not --type")
        if args.type == "auto" and not _is_data_dir(src):
            raise SystemExit(f"make_raw_list: --type auto needs a dir with wav.scp + utt2type: "
                             f"{src}")
        if _is_data_dir(src):
            refuse_segments(src, "make_raw_list --type")
        entries = (source_entries_from_data_dir(src, args.type)
                   if _is_data_dir(src) else source_entries_from_folder(src, args.type))
    else:
        if not _is_data_dir(src):
            raise SystemExit(f"make_raw_list: {src} is not a data dir (no wav.scp); "
                             "use --type for a folder of noise/RIR audio")
        data = read_data_dir(src)
        entries = raw_entries_from_data_dir(data)
        if args.spk2id:
            write_spk2id(args.spk2id, make_spk2id(data.utt2spk.values()))
    n = write_raw_list(args.output, entries)
    print(f"make_raw_list: wrote {n} lines to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
