"""VoxCeleb data preparation (stage 1 of run.sh): decoding, data dirs, trial lists.

    # VoxCeleb2 dev .m4a -> 16 kHz mono flac (or wav), in parallel; re-running resumes
    python local/prepare_voxceleb.py decode --format flac --nj 16 \\
        /corpora/voxceleb2/dev/aac /corpora/voxceleb2/dev/flac
    # Kaldi data dir (wav.scp, utt2spk, spk2utt, utt2dur) of a <spk>/<video>/<NNNNN>.<ext> tree
    python local/prepare_voxceleb.py data --ext wav /corpora/voxceleb1/wav data/vox1
    # Vox1-O/E/H cleaned lists ('1 enroll test') -> data/vox1/trials/vox1_{O,E,H}_cleaned.kaldi
    python local/prepare_voxceleb.py trials /corpora/voxceleb1 data/vox1
    # labelled trials drawn from a data dir (QMF calibration, stage 7)
    python local/prepare_voxceleb.py cal_trials --num_trials 30000 --seed 777 \\
        data/vox2_dev data/vox2_dev/trials/cal.kaldi
    # a validation set: 100 speakers held out of training (data/vox2_valid, with
    # trials.kaldi) and the training set without them (data/vox2_train)
    python local/prepare_voxceleb.py valid --num_speakers 100 --seed 777 \\
        data/vox2_dev data/vox2_train data/vox2_valid

Utterance keys are VoxCeleb ids whatever the storage format:
``id10270/x6uYqmx31kE/00001.wav`` (the official trial lists use them), the speaker
being the first component.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wespeaker_lap.dataset.datadir import (
    compute_utt2dur,
    read_data_dir,
    validate_data_dir,
    write_data_dir,
)
from wespeaker_lap.io.files import read_table, write_table
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("prepare_voxceleb")

# official cleaned list -> Kaldi trial file written under <data>/trials/
TRIAL_LISTS = {
    "veri_test2.txt": "vox1_O_cleaned.kaldi",
    "list_test_all2.txt": "vox1_E_cleaned.kaldi",
    "list_test_hard2.txt": "vox1_H_cleaned.kaldi",
}
FFMPEG_CODECS = {"flac": ("flac", "flac"), "wav": ("pcm_s16le", "wav")}  # format -> codec, muxer


# ------------------------------------------------------------------ decoding
def decode_plan(src: Path, dst: Path, fmt: str) -> list[tuple[Path, Path]]:
    """``(m4a, output)`` pairs still to decode: ``src/a/b/c.m4a -> dst/a/b/c.<fmt>``.

    Outputs that already exist are finished (each is written under a temporary
    name and renamed), so they are left out: a re-run resumes.
    """
    if fmt not in FFMPEG_CODECS:
        raise ValueError(f"unknown format {fmt!r}; valid: {sorted(FFMPEG_CODECS)}")
    src_files = sorted(src.glob("*/*/*.m4a"))
    if not src_files:
        raise FileNotFoundError(f"{src}: no <speaker>/<video>/<NNNNN>.m4a files")
    plan = []
    for f in src_files:
        out = (dst / f.relative_to(src)).with_suffix("." + fmt)
        if not out.is_file():
            plan.append((f, out))
    return plan


def decode_one(src: Path, out: Path, fmt: str, rate: int = 16000) -> str | None:
    """Decode one file with ffmpeg to mono ``rate`` Hz; None on success, else the error."""
    codec, muxer = FFMPEG_CODECS[fmt]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")  # fixed name: a killed run's leftover is overwritten
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
           "-vn", "-ac", "1", "-ar", str(rate), "-c:a", codec, "-f", muxer, str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        return (r.stderr.strip().splitlines() or [f"ffmpeg exit status {r.returncode}"])[-1]
    os.replace(tmp, out)
    return None


def decode_tree(src: Path, dst: Path, fmt: str, nj: int) -> list[tuple[Path, str]]:
    """Decode every m4a under ``src`` not yet decoded; returns the failures."""
    plan = decode_plan(src, dst, fmt)
    logger.info("%s: %d file(s) to decode into %s (%s, %d jobs)", src, len(plan), dst, fmt, nj)
    failed = []
    with ThreadPoolExecutor(max(1, nj)) as pool:
        results = pool.map(lambda p: decode_one(p[0], p[1], fmt), plan)
        for (f, _), err in tqdm(zip(plan, results, strict=True), total=len(plan),
                                desc="decode", unit="file", mininterval=10):
            if err is not None:
                failed.append((f, err))
    return failed


# ------------------------------------------------------------------ data dirs
def voxceleb_key(rel: Path) -> str:
    """``id10001/1zcIwhmdeo4/00001.flac`` -> ``id10001/1zcIwhmdeo4/00001.wav``."""
    if len(rel.parts) != 3:
        raise ValueError(f"{rel}: expected <speaker>/<video>/<NNNNN>.<ext>")
    return rel.with_suffix(".wav").as_posix()


def scan_tree(root: Path, ext: str) -> dict[str, str]:
    """``{key: absolute path}`` of the ``<speaker>/<video>/<NNNNN>.<ext>`` files under root."""
    files = sorted(root.glob(f"*/*/*.{ext}"))
    if not files:
        raise FileNotFoundError(f"{root}: no <speaker>/<video>/<NNNNN>.{ext} files")
    return {voxceleb_key(f.relative_to(root)): str(f.resolve()) for f in files}


def make_data_dir(root: Path, out: Path, ext: str, nj: int) -> int:
    """Write a data dir (with utt2dur) of a VoxCeleb tree; unreadable files are dropped."""
    wav = scan_tree(root, ext)
    dur = compute_utt2dur(wav, nj)
    bad = sorted(k for k, d in dur.items() if d is None)
    if bad:
        logger.warning("%s: %d unreadable file(s) left out, first: %s", root, len(bad), bad[:5])
    wav = {k: v for k, v in wav.items() if dur[k] is not None}
    utt2spk = {k: k.split("/", 1)[0] for k in wav}
    write_data_dir(out, wav, utt2spk, {k: dur[k] for k in wav})
    logger.info("%s: %d utterances of %d speakers", out, len(wav), len(set(utt2spk.values())))
    return len(bad)


# ------------------------------------------------------------------ trials
def convert_trials(official: Path, out: Path, known: set[str] | None = None) -> tuple[int, int]:
    """Official ``1|0 enroll test`` lines -> Kaldi ``enroll test target|nontarget``.

    With ``known`` (the data dir's utterances), a trial naming an unknown
    utterance is an error naming it. Returns (targets, nontargets).
    """
    rows = []
    for lineno, (label, enroll, test) in enumerate(read_table(official, 3, 3), 1):
        if label not in ("0", "1"):
            raise ValueError(f"{official}:{lineno}: label must be 0 or 1, got {label!r}")
        rows.append((enroll, test, "target" if label == "1" else "nontarget"))
    if known is not None:
        missing = sorted({u for r in rows for u in r[:2] if u not in known})
        if missing:
            raise ValueError(f"{official}: {len(missing)} utterance(s) not in the data dir, "
                             f"first: {missing[:5]}")
    write_table(out, rows)
    n_target = sum(r[2] == "target" for r in rows)
    return n_target, len(rows) - n_target


def sample_trials(
    utt2spk: dict[str, str], num_trials: int, seed: int
) -> list[tuple[str, str, str]]:
    """``num_trials`` distinct labelled trials, half target, half non-target.

    Enrollment utterances are drawn uniformly; a target trial pairs it with
    another utterance of its speaker, a non-target one with an utterance of
    another speaker. Deterministic given ``seed``.
    """
    utts = sorted(utt2spk)
    spk_of = [utt2spk[u] for u in utts]
    by_spk: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(spk_of):
        by_spk[s].append(i)
    if len(by_spk) < 2 or max(len(v) for v in by_spk.values()) < 2:
        raise ValueError("need two speakers and a speaker with two utterances to draw trials")
    rng = np.random.default_rng(seed)
    want = {"target": num_trials // 2 + num_trials % 2, "nontarget": num_trials // 2}
    seen: set[tuple[int, int]] = set()
    out = []
    for label, n in want.items():
        got, tries = 0, 0
        while got < n and tries < 20 * n + 100:
            tries += 1
            e = int(rng.integers(len(utts)))
            if label == "target":
                pool = by_spk[spk_of[e]]
                if len(pool) < 2:
                    continue
                t = pool[int(rng.integers(len(pool)))]
                if t == e:
                    continue
            else:
                t = int(rng.integers(len(utts)))
                if spk_of[t] == spk_of[e]:
                    continue
            pair = (min(e, t), max(e, t))
            if pair in seen:
                continue
            seen.add(pair)
            out.append((utts[e], utts[t], label))
            got += 1
        if got < n:
            logger.warning("only %d distinct %s trials could be drawn (asked %d)", got, label, n)
    return out


# ------------------------------------------------------------------ validation split
def split_valid(utt2spk: dict[str, str], num_speakers: int, max_utts_per_speaker: int,
                seed: int) -> tuple[list[str], list[str]]:
    """``(training utterances, validation utterances)``: ``num_speakers`` speakers drawn
    (seeded) are held out of training; at most ``max_utts_per_speaker`` of each (drawn)
    validate, the rest of theirs is used nowhere. Speakers never straddle the two."""
    speakers = sorted(set(utt2spk.values()))
    if not 0 < num_speakers < len(speakers):
        raise ValueError(f"--num_speakers must be in [1, {len(speakers) - 1}] (the data dir has "
                         f"{len(speakers)} speakers), got {num_speakers}")
    rng = np.random.default_rng(seed)
    held = {speakers[int(i)] for i in rng.choice(len(speakers), num_speakers, replace=False)}
    by_spk: dict[str, list[str]] = defaultdict(list)
    for u in sorted(utt2spk):
        by_spk[utt2spk[u]].append(u)
    train = [u for u in sorted(utt2spk) if utt2spk[u] not in held]
    valid = []
    for spk in sorted(held):
        utts = by_spk[spk]
        if len(utts) > max_utts_per_speaker:
            pick = rng.choice(len(utts), max_utts_per_speaker, replace=False)
            utts = [utts[int(i)] for i in sorted(pick)]
        valid.extend(utts)
    return train, valid


def write_subset(src, utts: list[str], out: Path) -> None:
    """The data dir of ``utts`` (a subset of the data dir ``src``), utt2dur included."""
    dur = src.utt2dur
    write_data_dir(out, {u: src.wav[u] for u in utts}, {u: src.utt2spk[u] for u in utts},
                   {u: dur[u] for u in utts} if dur is not None else None)


# ------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decode", help="m4a tree -> wav/flac tree (ffmpeg, parallel, resumable)")
    d.add_argument("src", type=Path, help="VoxCeleb2 dev/aac")
    d.add_argument("dst", type=Path)
    d.add_argument("--format", default="flac", choices=sorted(FFMPEG_CODECS))
    d.add_argument("--nj", type=int, default=8, help="ffmpeg processes at once")
    m = sub.add_parser("data", help="data dir of a <spk>/<video>/<NNNNN>.<ext> tree")
    m.add_argument("root", type=Path)
    m.add_argument("data", type=Path)
    m.add_argument("--ext", default="wav")
    m.add_argument("--nj", type=int, default=8, help="threads reading headers")
    t = sub.add_parser("trials", help="official Vox1-O/E/H cleaned lists -> Kaldi trials")
    t.add_argument("trials_dir", type=Path, help=f"holding {', '.join(TRIAL_LISTS)}")
    t.add_argument("data", type=Path, help="the vox1 data dir; writes <data>/trials/")
    c = sub.add_parser("cal_trials", help="labelled trials drawn from a data dir")
    c.add_argument("data", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--num_trials", type=int, default=30000)
    c.add_argument("--seed", type=int, default=777)
    v = sub.add_parser("valid", help="hold speakers out of a data dir: training and validation "
                       "dirs, validation trials")
    v.add_argument("data", type=Path, help="the full data dir (vox2_dev)")
    v.add_argument("train_out", type=Path, help="the training data dir without them")
    v.add_argument("valid_out", type=Path, help="the validation data dir (with trials.kaldi)")
    v.add_argument("--num_speakers", type=int, default=100)
    v.add_argument("--max_utts_per_speaker", type=int, default=20)
    v.add_argument("--num_trials", type=int, default=20000)
    v.add_argument("--seed", type=int, default=777)
    args = p.parse_args(argv)
    setup_logging()

    if args.command == "decode":
        if subprocess.run(["ffmpeg", "-version"], capture_output=True).returncode != 0:
            logger.error("ffmpeg is required to decode VoxCeleb2 (apt-get install ffmpeg)")
            return 1
        failed = decode_tree(args.src, args.dst, args.format, args.nj)
        for f, err in failed[:20]:
            logger.error("%s: %s", f, err)
        if failed:
            logger.error("%d file(s) failed to decode; re-run to retry them", len(failed))
            return 1
    elif args.command == "data":
        make_data_dir(args.root, args.data, args.ext, args.nj)
    elif args.command == "trials":
        known = set(read_data_dir(args.data).wav)
        for name, kaldi in TRIAL_LISTS.items():
            src = args.trials_dir / name
            if not src.is_file():
                logger.error("no %s in %s (see the README for its URL)", name, args.trials_dir)
                return 1
            n_t, n_n = convert_trials(src, args.data / "trials" / kaldi, known)
            logger.info("%s: %d target, %d non-target trials", kaldi, n_t, n_n)
    elif args.command == "valid":
        src = read_data_dir(args.data)
        try:
            train, valid = split_valid(src.utt2spk, args.num_speakers,
                                       args.max_utts_per_speaker, args.seed)
        except ValueError as e:
            logger.error("%s: %s", args.data, e)
            return 1
        write_subset(src, train, args.train_out)
        write_subset(src, valid, args.valid_out)
        for out in (args.train_out, args.valid_out):  # the audio was checked in vox2_dev
            problems = validate_data_dir(out, check_audio=False)
            if problems:
                logger.error("%s: %s", out, "; ".join(problems))
                return 1
        vu2s = {u: src.utt2spk[u] for u in valid}
        rows = sample_trials(vu2s, args.num_trials, args.seed)
        write_table(args.valid_out / "trials.kaldi", rows)
        logger.info("%s: %d utterances; %s: %d utterances of %d held-out speakers, %d trials",
                    args.train_out, len(train), args.valid_out, len(valid),
                    len(set(vu2s.values())), len(rows))
    else:
        rows = sample_trials(read_data_dir(args.data).utt2spk, args.num_trials, args.seed)
        write_table(args.out, rows)
        logger.info("%s: %d trials", args.out, len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
