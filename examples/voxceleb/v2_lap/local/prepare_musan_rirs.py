"""MUSAN (openslr 17) and RIRS_NOISES (openslr 28) -> augmentation dirs (stage 1).

    python local/prepare_musan_rirs.py --musan_root /corpora/musan \\
        --rirs_root /corpora/RIRS_NOISES --data data

Writes (for the roots given) ``<data>/musan/{wav.scp,utt2type}`` from
``musan/{noise,music,speech}/``
(types noise, music and babble: MUSAN speech is mixed as babble) and
``<data>/rirs/wav.scp`` from ``RIRS_NOISES/simulated_rirs/`` (small, medium and
large simulated rooms, as in WeSpeaker and Kaldi's VoxCeleb recipe). Keys are
paths relative to the root without extension
(``noise/free-sound/noise-free-sound-0000``,
``simulated_rirs/smallroom/Room001/Room001-00001``). Stage 2 turns them into
lists with ``make_raw_list --type auto`` and ``--type rir``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from wespeaker_lap.dataset.lists import find_audio_files
from wespeaker_lap.io.files import write_table
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("prepare_musan_rirs")

MUSAN_TYPES = {"noise": "noise", "music": "music", "speech": "babble"}  # sub-folder -> type
RIR_SUBDIR = "simulated_rirs"


def musan_entries(root: Path) -> dict[str, tuple[str, str]]:
    """``{key: (path, type)}`` of every MUSAN file; each sub-folder must hold audio."""
    out: dict[str, tuple[str, str]] = {}
    for sub, kind in MUSAN_TYPES.items():
        folder = root / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"{root}: no {sub}/ (expected the MUSAN root: "
                                    f"{', '.join(d + '/' for d in MUSAN_TYPES)})")
        files = find_audio_files(folder)
        if not files:
            raise FileNotFoundError(f"{folder}: no audio files")
        for f in files:
            out[f.relative_to(root).with_suffix("").as_posix()] = (str(f.resolve()), kind)
    return out


def rir_entries(root: Path) -> dict[str, str]:
    """``{key: path}`` of the simulated RIRs under ``RIRS_NOISES/simulated_rirs``."""
    folder = root / RIR_SUBDIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: no {RIR_SUBDIR}/ (expected the RIRS_NOISES root)")
    files = find_audio_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no audio files")
    return {f.relative_to(root).with_suffix("").as_posix(): str(f.resolve()) for f in files}


def write_musan(root: Path, out: Path) -> int:
    entries = musan_entries(root)
    keys = sorted(entries)
    write_table(out / "wav.scp", ((k, entries[k][0]) for k in keys))
    write_table(out / "utt2type", ((k, entries[k][1]) for k in keys))
    counts = {t: sum(v[1] == t for v in entries.values()) for t in MUSAN_TYPES.values()}
    logger.info("%s: %d files %s", out, len(keys), counts)
    return len(keys)


def write_rirs(root: Path, out: Path) -> int:
    entries = rir_entries(root)
    write_table(out / "wav.scp", sorted(entries.items()))
    logger.info("%s: %d simulated RIRs", out, len(entries))
    return len(entries)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--musan_root", type=Path, help="musan/ (noise, music, speech)")
    p.add_argument("--rirs_root", type=Path, help="RIRS_NOISES/ (simulated_rirs)")
    p.add_argument("--data", type=Path, required=True, help="writes <data>/musan and <data>/rirs")
    args = p.parse_args(argv)
    if args.musan_root is None and args.rirs_root is None:
        p.error("give --musan_root and/or --rirs_root")
    setup_logging()
    try:
        if args.musan_root is not None:
            write_musan(args.musan_root, args.data / "musan")
        if args.rirs_root is not None:
            write_rirs(args.rirs_root, args.data / "rirs")
    except (FileNotFoundError, NotADirectoryError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
