"""Pack a data dir (or a raw list) into tar shards and write shard.list.

    python -m wespeaker_lap.bin.make_shard_list data/train data/train/shards \
        data/train/shard.list --num-utts-per-shard 1000 --nj 8

Each tar holds ``<name>.<ext>`` (the audio file's bytes) and ``<name>.spk`` per
utterance, ``<name>`` being the key with unsafe characters percent-encoded
(``/`` -> ``%2F``). Shards are written in parallel, each atomically, and the
list last, so an interrupted run leaves no list naming a half-written shard.
Kaldi piped wav.scp entries (``cmd |``) need ``--allow_pipes``; their output
is stored as ``<name>.wav``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wespeaker_lap.dataset.datadir import read_data_dir
from wespeaker_lap.dataset.lists import make_shard_list, raw_entries_from_data_dir, read_raw_list
from wespeaker_lap.utils.logging_utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source", help="data dir (wav.scp + utt2spk) or raw.list")
    p.add_argument("shard_dir", help="where the tar files go")
    p.add_argument("shard_list", help="the list to write (absolute tar paths)")
    p.add_argument("--num_utts_per_shard", "--num-utts-per-shard", type=int, default=1000)
    p.add_argument("--nj", type=int, default=4, help="shards written at once (threads)")
    p.add_argument("--no_shuffle", "--no-shuffle", action="store_true",
                   help="keep the data dir order (default: shuffle so shards mix speakers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="shards", help="tar file name prefix")
    p.add_argument("--allow_pipes", "--allow-pipes", action="store_true",
                   help="run Kaldi piped wav.scp entries ('cmd |') with a shell, as Kaldi does")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    src = Path(args.source)
    try:
        if src.is_dir():
            entries = raw_entries_from_data_dir(read_data_dir(src))
        else:
            entries = read_raw_list(src, required=("key", "spk", "wav"))
        paths = make_shard_list(entries, args.shard_dir, args.shard_list,
                                num_utts_per_shard=args.num_utts_per_shard, num_threads=args.nj,
                                shuffle=not args.no_shuffle, seed=args.seed, prefix=args.prefix,
                                allow_pipes=args.allow_pipes)
    except (OSError, ValueError) as e:
        print(f"make_shard_list: {e}", file=sys.stderr)
        return 1
    print(f"make_shard_list: {len(entries)} utterances in {len(paths)} shards -> {args.shard_list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
