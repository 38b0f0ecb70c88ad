"""VCTK 0.92 speaker verification protocol of the UniPool paper (Kim et al., 2024).

Audio, split and trials.

    python local/prepare_vctk.py --vctk_root /corpora/VCTK-Corpus-0.92 \\
        --audio_dir data/vctk_16k --data data --seed 777 --nj 8

From ``wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac`` and ``speaker-info.txt``:

1. drop speakers p280 and p315 and utterances 000-024 (the passage every speaker
   read); speakers without a speaker-info row, or without audio, are reported
   and left out; only the mic1 recordings are used;
2. resample 48 kHz -> 16 kHz flac under ``--audio_dir/pXXX/pXXX_NNN.flac``
   (parallel; files already written are kept, so a re-run resumes);
3. split the speakers 60/20/20 into train/val/test, stratified on gender, accent,
   age bin and utterance count (:func:`split_speakers`, by minimisation);
4. val and test trials (:func:`target_trials`, :func:`nontarget_trials`): about
   ``--num_target`` target trials spread evenly over the speakers and about
   ``--num_nontarget`` non-target trials spread evenly over the four
   same/different gender x same/different accent cells.

Writes ``<data>/{train,val,test}/{wav.scp,utt2spk,spk2utt,utt2dur}``,
``<data>/trials/vctk_{val,test}.kaldi`` and ``<data>/speakers.tsv`` (one row per kept
speaker with its metadata, bins and subset). Everything is deterministic given
``--seed``. Utterance ids are ``pXXX_NNN``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from wespeaker_lap.dataset.audio import resample
from wespeaker_lap.dataset.datadir import compute_utt2dur, write_data_dir
from wespeaker_lap.io.files import atomic_path, atomic_write, write_table
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("prepare_vctk")

EXCLUDED_SPEAKERS = ("p280", "p315")  # p280: no mic2, p315: no text (the UniPool protocol)
FIRST_KEPT_UTT = 25  # utterances 000-024 are the passage every speaker read
SUBSETS = ("train", "val", "test")
AUDIO_NAME = re.compile(r"^(?P<spk>[ps]\d+)_(?P<num>\d{3})_mic1\.flac$")
# non-target cells: (same gender, same accent)
CELLS = ((True, True), (True, False), (False, True), (False, False))
CELL_NAMES = {c: f"{'same' if c[0] else 'other'} gender, {'same' if c[1] else 'other'} accent"
              for c in CELLS}


@dataclass(frozen=True)
class Speaker:
    """One row of ``speaker-info.txt``."""

    id: str
    age: int
    gender: str  # F or M
    accent: str
    region: str = ""
    comment: str = ""


# ------------------------------------------------------------------ metadata
def parse_speaker_info(text: str) -> dict[str, Speaker]:
    """Parse VCTK's ``speaker-info.txt``.

    Columns are separated by runs of spaces: ``ID AGE GENDER ACCENTS`` then the
    region (may be several words, or missing) and an optional comment in
    parentheses (``p280  25  F  Unknown  France (mic2 files unavailable)``).
    The header line (``ID  AGE  GENDER ...``) is skipped; ids without the
    ``p`` (older releases: ``225``) get it.

    >>> info = parse_speaker_info("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\\n"
    ...                           "p225  23  F    English    Southern  England\\n")
    >>> info["p225"].accent, info["p225"].region
    ('English', 'Southern England')
    """
    out: dict[str, Speaker] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.split()[0].upper() == "ID":
            continue
        comment = ""
        m = re.search(r"\((.*)\)\s*$", line)
        if m:
            comment, line = m.group(1).strip(), line[: m.start()]
        fields = line.split()
        if len(fields) < 4:
            raise ValueError(f"speaker-info.txt:{lineno}: expected ID AGE GENDER ACCENTS "
                             f"[REGION], got {line.strip()!r}")
        spk, age, gender, accent = fields[:4]
        if spk.isdigit():
            spk = "p" + spk
        if gender not in ("F", "M") or not age.isdigit():
            raise ValueError(f"speaker-info.txt:{lineno}: bad age/gender {age!r} {gender!r}")
        if spk in out:
            raise ValueError(f"speaker-info.txt:{lineno}: speaker {spk} listed twice")
        out[spk] = Speaker(spk, int(age), gender, accent, " ".join(fields[4:]), comment)
    return out


def utterance_number(name: str) -> tuple[str, int] | None:
    """``p225_025_mic1.flac`` -> ``("p225", 25)``; None for other files (mic2, txt...)."""
    m = AUDIO_NAME.match(name)
    return (m["spk"], int(m["num"])) if m else None


def scan_audio(wav_root: Path) -> dict[str, dict[str, Path]]:
    """``{speaker: {utt id: mic1 flac}}`` of the kept utterances (number >= 025)."""
    if not wav_root.is_dir():
        raise FileNotFoundError(f"no {wav_root} (expected VCTK 0.92's wav48_silence_trimmed)")
    out: dict[str, dict[str, Path]] = {}
    for spk_dir in sorted(p for p in wav_root.iterdir() if p.is_dir()):
        for f in sorted(spk_dir.iterdir()):
            parsed = utterance_number(f.name)
            if parsed is None or parsed[0] != spk_dir.name or parsed[1] < FIRST_KEPT_UTT:
                continue
            out.setdefault(spk_dir.name, {})[f"{parsed[0]}_{parsed[1]:03d}"] = f
    return out


def select_speakers(
    info: Mapping[str, Speaker], audio: Mapping[str, Mapping[str, Path]],
    excluded: Sequence[str] = EXCLUDED_SPEAKERS,
) -> list[str]:
    """The speakers of the protocol: in the metadata, with kept audio, not excluded."""
    dropped = {
        "excluded by the protocol": sorted(s for s in excluded if s in info or s in audio),
        "no speaker-info row": sorted(s for s in audio if s not in info and s not in excluded),
        "no utterance >= 025": sorted(s for s in info if not audio.get(s) and s not in excluded),
    }
    for why, spks in dropped.items():
        if spks:
            logger.info("left out (%s): %s", why, " ".join(spks))
    return sorted(s for s in info if audio.get(s) and s not in excluded)


# ------------------------------------------------------------------ split
def age_bin(age: int, edges: Sequence[int] = (22, 25)) -> str:
    """``age`` -> a bin label: ``<22``, ``22-24``, ``>=25`` for the default edges."""
    edges = sorted(edges)
    if age < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in zip(edges, edges[1:], strict=False):
        if lo <= age < hi:
            return f"{lo}-{hi - 1}"
    return f">={edges[-1]}"


def strata(
    speakers: Sequence[Speaker], num_utts: Mapping[str, int], age_edges: Sequence[int] = (22, 25)
) -> dict[str, tuple[str, str, str, str]]:
    """``{speaker: (gender, accent, age bin, utterance-count bin)}``.

    The count bin says whether the speaker has fewer utterances than the
    median speaker (``low``) or not (``high``).
    """
    median = float(np.median([num_utts[s.id] for s in speakers]))
    return {s.id: (s.gender, s.accent, age_bin(s.age, age_edges),
                   "low" if num_utts[s.id] < median else "high") for s in speakers}


def split_speakers(
    keys: Mapping[str, tuple], fractions: Sequence[float], seed: int,
    names: Sequence[str] = SUBSETS,
) -> dict[str, str]:
    """Stratified split by minimisation: ``{speaker: subset name}``.

    ``keys`` gives each speaker's stratification factors (gender, accent, age
    bin, utterance-count bin). With strata of one or two speakers (VCTK has
    about 108 speakers over a dozen accents) a split per stratum cannot keep
    proportions, so the factors are balanced together (Pocock and Simon's
    minimisation): speakers come in a seeded random order, and each goes to the
    subset that lags most behind its share, summed over the speaker's value of
    every factor and over the whole split. The totals end within one of
    ``fraction * N``, and every factor value is split in proportion to within
    a speaker or two.

    >>> split = split_speakers({f"s{i}": ("F",) for i in range(10)}, (0.6, 0.2, 0.2), 0)
    >>> sorted(list(split.values()).count(n) for n in ("train", "val", "test"))
    [2, 2, 6]
    """
    if len(fractions) != len(names) or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions {list(fractions)} must be {len(names)} non-negative numbers")
    frac = np.asarray(fractions, dtype=float) / float(sum(fractions))
    rng = np.random.default_rng(seed)
    spks = sorted(keys)
    seen: dict[tuple[int, object], int] = {}
    given: dict[tuple[int, object], np.ndarray] = {}
    total = np.zeros(len(names))
    out = {}
    for i, p in enumerate(rng.permutation(len(spks)), 1):
        spk = spks[p]
        factors = list(enumerate(keys[spk]))
        lag = frac * i - total
        for f in factors:
            lag += frac * (seen.get(f, 0) + 1) - given.get(f, np.zeros(len(names)))
        best = np.flatnonzero(np.isclose(lag, lag.max()))
        j = int(best[0] if len(best) == 1 else rng.choice(best))
        for f in factors:
            seen[f] = seen.get(f, 0) + 1
            given.setdefault(f, np.zeros(len(names)))[j] += 1
        total[j] += 1
        out[spk] = names[j]
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ trials
def spread_evenly(total: int, capacities: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Share ``total`` items as evenly as possible among bins of limited capacity.

    Water filling: every bin gets the same share, a full bin's leftover goes to
    the others, and the last indivisible units to randomly chosen bins. Gives
    ``min(total, sum(capacities))`` items in all.

    >>> spread_evenly(10, [2, 100, 100], np.random.default_rng(0)).tolist()
    [2, 4, 4]
    """
    caps = np.asarray(capacities, dtype=np.int64)
    alloc = np.zeros_like(caps)
    remaining = int(min(total, caps.sum()))
    while remaining > 0:
        room = np.flatnonzero(alloc < caps)
        share = remaining // len(room)
        if share == 0:  # fewer units than open bins: one each to random ones
            alloc[rng.choice(room, remaining, replace=False)] += 1
            break
        give = np.minimum(share, caps[room] - alloc[room])
        alloc[room] += give
        remaining -= int(give.sum())
    return alloc


def _pick(n_items: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n_items, size=k, replace=False))


def target_trials(
    spk2utts: Mapping[str, Sequence[str]], num: int, rng: np.random.Generator
) -> list[tuple[str, str, str]]:
    """About ``num`` distinct same-speaker pairs, spread evenly over the speakers."""
    spks = sorted(spk2utts)
    caps = [len(spk2utts[s]) * (len(spk2utts[s]) - 1) // 2 for s in spks]
    out = []
    for spk, k in zip(spks, spread_evenly(num, caps, rng), strict=True):
        utts = sorted(spk2utts[spk])
        first, second = np.triu_indices(len(utts), 1)
        for p in _pick(len(first), int(k), rng):
            out.append((utts[first[p]], utts[second[p]], "target"))
    return out


def nontarget_trials(
    spk2utts: Mapping[str, Sequence[str]], info: Mapping[str, Speaker], num: int,
    rng: np.random.Generator,
) -> tuple[list[tuple[str, str, str]], dict[tuple[bool, bool], int]]:
    """About ``num`` distinct different-speaker pairs, spread evenly over the four
    (same/different gender x same/different accent) cells, and within a cell
    evenly over its speaker pairs. Returns the trials and the count per cell
    (a cell without speaker pairs gets none, its share going to the others).
    """
    spks = sorted(spk2utts)
    pairs: dict[tuple[bool, bool], list[tuple[str, str]]] = {c: [] for c in CELLS}
    for i, a in enumerate(spks):
        for b in spks[i + 1:]:
            cell = (info[a].gender == info[b].gender, info[a].accent == info[b].accent)
            pairs[cell].append((a, b))
    cell_caps = [sum(len(spk2utts[a]) * len(spk2utts[b]) for a, b in pairs[c]) for c in CELLS]
    out = []
    counts = {}
    for cell, n_cell in zip(CELLS, spread_evenly(num, cell_caps, rng), strict=True):
        counts[cell] = int(n_cell)
        caps = [len(spk2utts[a]) * len(spk2utts[b]) for a, b in pairs[cell]]
        for (a, b), k in zip(pairs[cell], spread_evenly(int(n_cell), caps, rng), strict=True):
            ua, ub = sorted(spk2utts[a]), sorted(spk2utts[b])
            for p in _pick(len(ua) * len(ub), int(k), rng):
                out.append((ua[p // len(ub)], ub[p % len(ub)], "nontarget"))
    return out, counts


# ------------------------------------------------------------------ audio
def _resample_one(job: tuple[str, str, int]) -> str | None:
    src, dst, rate = job
    out = Path(dst)
    if out.is_file():
        return None
    try:
        wav, sr = sf.read(src, dtype="float32", always_2d=True)
        y = np.clip(resample(wav[:, 0], sr, rate), -1.0, 1.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            sf.write(tmp, y, rate, format="FLAC", subtype="PCM_16")
    except Exception as e:  # reported per file; the stage fails after trying them all
        return f"{src}: {e}"
    return None


def resample_all(files: Mapping[str, Path], audio_dir: Path, rate: int, nj: int) -> dict[str, str]:
    """``{utt: 16 kHz flac}``: resample every file not done yet, ``nj`` processes."""
    out = {u: str((audio_dir / u.split("_", 1)[0] / f"{u}.flac").resolve()) for u in files}
    jobs = [(str(files[u]), out[u], rate) for u in sorted(files)]
    todo = sum(not Path(o).is_file() for _, o, _ in jobs)
    logger.info("%d of %d files to resample to %d Hz into %s", todo, len(jobs), rate, audio_dir)
    with ProcessPoolExecutor(max(1, nj)) as pool:
        errors = [e for e in pool.map(_resample_one, jobs, chunksize=64) if e]
    if errors:
        raise RuntimeError(f"{len(errors)} file(s) failed: " + "; ".join(errors[:5]))
    return out


# ------------------------------------------------------------------ driver
def prepare(args: argparse.Namespace) -> None:
    info = parse_speaker_info((args.vctk_root / "speaker-info.txt").read_text(encoding="utf-8"))
    audio = scan_audio(args.vctk_root / "wav48_silence_trimmed")
    kept = select_speakers(info, audio)
    if len(kept) < len(SUBSETS):
        raise ValueError(f"only {len(kept)} usable speakers")
    num_utts = {s: len(audio[s]) for s in kept}
    keys = strata([info[s] for s in kept], num_utts, args.age_bins)
    subset = split_speakers(keys, args.split, args.seed)

    files = {u: f for s in kept for u, f in audio[s].items()}
    wav = resample_all(files, args.audio_dir, args.sample_rate, args.nj)
    dur = compute_utt2dur(wav, max(1, args.nj))
    bad = sorted(u for u, d in dur.items() if d is None)
    if bad:
        raise RuntimeError(f"{len(bad)} resampled file(s) unreadable, first: {bad[:5]}")

    rng = np.random.default_rng(args.seed)
    for name in SUBSETS:
        spks = [s for s in kept if subset[s] == name]
        utts = {u: s for s in spks for u in audio[s]}
        write_data_dir(args.data / name, {u: wav[u] for u in utts}, utts,
                       {u: dur[u] for u in utts})
        logger.info("%s: %d speakers, %d utterances", name, len(spks), len(utts))
        if name == "train":
            continue
        spk2utts = {s: sorted(audio[s]) for s in spks}
        tgt = target_trials(spk2utts, args.num_target, rng)
        non, cells = nontarget_trials(spk2utts, info, args.num_nontarget, rng)
        write_table(args.data / "trials" / f"vctk_{name}.kaldi", tgt + non)
        logger.info("%s trials: %d target, %d non-target (%s)", name, len(tgt), len(non),
                    "; ".join(f"{CELL_NAMES[c]}: {n}" for c, n in cells.items()))
        if len(tgt) < args.num_target or min(cells.values()) < args.num_nontarget // 4:
            logger.warning("%s: too few speakers or utterances for the asked trial counts "
                           "(speakers without enough pairs, or empty cells, gave their share "
                           "to the others)", name)
    with atomic_write(args.data / "speakers.tsv") as f:
        f.write("speaker\tgender\taccent\tage\tage_bin\tnum_utts\tsubset\n")
        for s in kept:
            f.write(f"{s}\t{info[s].gender}\t{info[s].accent}\t{info[s].age}\t{keys[s][2]}\t"
                    f"{num_utts[s]}\t{subset[s]}\n")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vctk_root", type=Path, required=True,
                   help="holds speaker-info.txt and wav48_silence_trimmed/")
    p.add_argument("--audio_dir", type=Path, required=True, help="16 kHz flac files go here")
    p.add_argument("--data", type=Path, required=True, help="data dirs go here")
    p.add_argument("--split", type=_floats, default=[0.6, 0.2, 0.2],
                   help="train,val,test speaker fractions (default 0.6,0.2,0.2)")
    p.add_argument("--age_bins", type=_ints, default=[22, 25],
                   help="age bin edges for the stratification (default 22,25)")
    p.add_argument("--num_target", type=int, default=8000, help="target trials per list")
    p.add_argument("--num_nontarget", type=int, default=8000, help="non-target trials per list")
    p.add_argument("--sample_rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--nj", type=int, default=4, help="resampling processes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        prepare(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
