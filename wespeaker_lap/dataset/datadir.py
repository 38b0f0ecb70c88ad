"""Kaldi data directories: read, write, validate, fix.

A data dir holds ``wav.scp`` (``utt path``), ``utt2spk`` (``utt spk``),
``spk2utt`` (``spk utt1 utt2 ...``) and, when computed, ``utt2dur``
(``utt seconds``) and, for Kaldi corpora of long recordings, ``segments``
(``utt recording start end``, seconds; ``end`` -1: to the end of the
recording). With ``segments``, ``wav.scp`` is keyed by recording and every
other file by utterance (a segment). Every file is sorted in byte order (``LC_ALL=C sort``; for
UTF-8 text that is Python's ``str`` order) with unique keys.

:func:`validate_data_dir` is Kaldi's ``validate_data_dir.sh``: it changes
nothing and returns the problems, each naming the file and line.
:func:`fix_data_dir` is ``fix_data_dir.sh``: it keeps the utterances present in
every per-utterance file, sorts, regenerates ``spk2utt`` and reports what it
dropped (originals are kept under ``.backup/``, then ``.backup.1/``, ... on later
runs that change something).

Text files must be UTF-8: another encoding (a Latin-1 ``wav.scp``) is an error
naming the file and line. Kaldi piped ``wav.scp`` entries (``cmd |``) are run
with a shell only where the caller allows pipes (``allow_pipes``); otherwise
every step that looks at the audio refuses them, naming the key.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from wespeaker_lap.dataset.audio import (
    PIPES_NEED_FLAG,
    BadAudio,
    check_waveform,
    decode_bytes,
    is_piped,
    read_bytes,
    truncation,
)
from wespeaker_lap.io.files import (
    atomic_write,
    not_a_file,
    read_scp,
    read_table,
    read_utt2dur,
    text_lines,
    write_table,
)

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "utt2spk", "spk2utt")


@dataclass(frozen=True)
class Segment:
    """One line of ``segments``: utterance ``recording`` from ``start`` to ``end`` seconds.

    ``end`` None: to the end of the recording (Kaldi writes -1). ``line``: its
    line in the file, for messages.
    """

    recording: str
    start: float
    end: float | None
    line: int = 0


def parse_segments(path: str | os.PathLike, recordings: Iterable[str] | None = None,
                   durations: dict[str, float | None] | None = None
                   ) -> tuple[dict[str, Segment], list[str]]:
    """Read a Kaldi ``segments`` file -> (``{utt: Segment}``, problems).

    Each problem names the file and line: a malformed line, a repeated
    utterance, start/end that are not numbers, ``start < 0`` or ``end <= start``,
    a recording that is not in ``recordings`` (wav.scp's keys), an end past the
    recording's duration (``durations``, where known), and a segment that
    overlaps the one before it on the same recording. A bad line is left out of
    the returned table.
    """
    path = Path(path)
    known = set(recordings) if recordings is not None else None
    segs: dict[str, Segment] = {}
    problems: list[str] = []
    for lineno, line in text_lines(path):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 4:
            problems.append(f"{where}: expected 4 fields (utt recording start end): "
                            f"{line.strip()!r}")
            continue
        utt, rec, start_s, end_s = fields
        try:
            start, end = float(start_s), float(end_s)
        except ValueError:
            problems.append(f"{where}: {utt!r}: start and end must be seconds, got "
                            f"{start_s!r} {end_s!r}")
            continue
        if utt in segs:
            problems.append(f"{where}: duplicate utterance {utt!r} (first on line "
                            f"{segs[utt].line})")
            continue
        seg = Segment(rec, start, None if end == -1 else end, lineno)
        why = None
        if not (math.isfinite(start) and math.isfinite(end)):
            why = f"start {start_s} / end {end_s} are not finite"
        elif start < 0:
            why = f"out of range: start {start_s} < 0"
        elif seg.end is not None and seg.end <= start:
            why = f"out of range: end {end_s} <= start {start_s}"
        elif known is not None and rec not in known:
            why = f"unknown recording {rec!r} (not a key of wav.scp)"
        elif durations is not None and durations.get(rec) is not None:
            dur = durations[rec]
            if start >= dur or (seg.end is not None and seg.end > dur + SEGMENT_END_SLACK):
                why = (f"out of range: {start_s}-{end_s} s, but recording {rec!r} lasts "
                       f"{dur:.3f} s")
        if why:
            problems.append(f"{where}: {utt!r}: {why}")
            continue
        segs[utt] = seg
    by_rec: dict[str, list[tuple[str, Segment]]] = {}
    for utt, seg in segs.items():
        by_rec.setdefault(seg.recording, []).append((utt, seg))
    for items in by_rec.values():
        items.sort(key=lambda it: (it[1].start, it[1].line))
        u0, s0 = items[0]
        for u1, s1 in items[1:]:
            if s1.start < (math.inf if s0.end is None else s0.end):
                problems.append(f"{path}:{s1.line}: {u1!r} ({s1.start:g}-"
                                f"{'end' if s1.end is None else f'{s1.end:g}'} s) overlaps "
                                f"{u0!r} on line {s0.line} of recording {s1.recording!r}")
                del segs[u1]  # the later one goes; the next is compared with the one kept
            else:
                u0, s0 = u1, s1
    return segs, problems


#: How far (s) a segment may end past its recording (Kaldi extract-segments' max-overshoot).
SEGMENT_END_SLACK = 0.5


def read_segments(path: str | os.PathLike, recordings: Iterable[str] | None = None
                  ) -> dict[str, Segment]:
    """:func:`parse_segments`, strictly: any problem is a ValueError listing the first ones."""
    segs, problems = parse_segments(path, recordings)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError("; ".join(problems[:5]) + more)
    return segs


def refuse_segments(data_dir: str | os.PathLike, tool: str) -> None:
    """Raise ValueError naming ``<data_dir>/segments`` for a tool that does not read segments."""
    seg = Path(data_dir) / "segments"
    if seg.is_file():
        raise ValueError(f"{seg}: {tool} does not read Kaldi segments (wav.scp keyed by "
                         "recording); make_raw_list, make_shard_list, extract and training do")


@dataclass
class DataDir:
    """An in-memory data dir. Dicts keep file order; :func:`write_data_dir` sorts."""

    path: Path
    wav: dict[str, str]
    utt2spk: dict[str, str]
    spk2utt: dict[str, list[str]] = field(default_factory=dict)
    utt2dur: dict[str, float] | None = None
    segments: dict[str, Segment] | None = None  # utt -> Segment; wav is then keyed by recording

    @property
    def utts(self) -> list[str]:
        return list(self.segments if self.segments is not None else self.wav)

    @property
    def speakers(self) -> list[str]:
        return sorted(set(self.utt2spk.values()))


def utt2spk_to_spk2utt(utt2spk: dict[str, str]) -> dict[str, list[str]]:
    """Invert utt2spk; speakers and their utterances in byte order."""
    out: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        out.setdefault(utt2spk[utt], []).append(utt)
    return dict(sorted(out.items()))


def read_data_dir(path: str | os.PathLike) -> DataDir:
    """Read a data dir strictly: malformed lines and duplicate keys raise ValueError.

    ``wav.scp`` and ``utt2spk`` are required; ``spk2utt`` is derived when absent
    (it is not cross-checked here: that is :func:`validate_data_dir`'s job).
    """
    path = Path(path)
    if not path.is_dir():
        raise NotADirectoryError(f"no such data dir: {path}")
    wav = read_scp(path / "wav.scp")
    utt2spk = read_scp(path / "utt2spk")
    for utt, spk in utt2spk.items():
        if len(spk.split()) != 1:
            first = spk.split()[0]
            if wav.get(utt, "").split(maxsplit=1)[0:1] == [first]:
                raise ValueError(f"{path}: the key {utt + ' ' + first!r} (wav.scp and utt2spk) "
                                 "contains a space; keys cannot contain whitespace")
            raise ValueError(f"{path / 'utt2spk'}: utterance {utt!r}: speaker {spk!r} has spaces")
    if (path / "spk2utt").is_file():
        spk2utt = {row[0]: row[1:] for row in read_table(path / "spk2utt", 2, None)}
    else:
        spk2utt = utt2spk_to_spk2utt(utt2spk)
    utt2dur = read_utt2dur(path / "utt2dur") if (path / "utt2dur").is_file() else None
    segments = (read_segments(path / "segments", wav) if (path / "segments").is_file()
                else None)
    return DataDir(path, wav, utt2spk, spk2utt, utt2dur, segments)


def write_data_dir(
    path: str | os.PathLike,
    wav: dict[str, str],
    utt2spk: dict[str, str],
    utt2dur: dict[str, float] | None = None,
) -> DataDir:
    """Write ``wav.scp``, ``utt2spk``, ``spk2utt`` (regenerated) and optional ``utt2dur``.

    Everything is sorted (byte order) and written atomically. Keys of
    ``utt2spk``/``utt2dur`` must match ``wav`` exactly (a dir with ``segments``
    is written by :func:`fix_data_dir`, not here).
    """
    path = Path(path)
    if set(wav) != set(utt2spk):
        diff = sorted(set(wav) ^ set(utt2spk))
        raise ValueError(f"wav.scp and utt2spk keys differ ({len(diff)}, first: {diff[:3]})")
    if utt2dur is not None and set(utt2dur) != set(wav):
        raise ValueError("utt2dur keys differ from wav.scp keys")
    for name, table in (("wav.scp", wav), ("utt2spk", utt2spk)):
        bad = [k for k, v in table.items() if not k or any(c.isspace() for c in k) or not v]
        if bad:
            raise ValueError(f"{name}: keys with whitespace or empty values: {bad[:3]}")
    path.mkdir(parents=True, exist_ok=True)
    write_table(path / "wav.scp", ((k, wav[k]) for k in sorted(wav)))
    write_table(path / "utt2spk", ((k, utt2spk[k]) for k in sorted(utt2spk)))
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    write_table(path / "spk2utt", ([s, *u] for s, u in spk2utt.items()))
    if utt2dur is not None:
        write_table(path / "utt2dur", ((k, f"{utt2dur[k]:.4f}") for k in sorted(utt2dur)))
    return DataDir(path, dict(sorted(wav.items())), dict(sorted(utt2spk.items())), spk2utt, utt2dur)


# ------------------------------------------------------------------ validation
def _rows(path: Path, min_fields: int, max_fields: int | None, problems: list[str]):
    """(lineno, fields) for each non-blank line; malformed lines become problems."""
    rows = []
    try:
        for lineno, line in text_lines(path):
            text = line.strip()
            if not text:
                continue
            fields = text.split(maxsplit=1) if max_fields == 2 else text.split()
            too_many = max_fields is not None and len(fields) > max_fields
            if len(fields) < min_fields or too_many:
                problems.append(f"{path}:{lineno}: expected {min_fields}"
                                f"{'' if max_fields == min_fields else '+'} fields: {text!r}")
                continue
            rows.append((lineno, fields))
    except ValueError as e:  # not UTF-8: named by file and line
        problems.append(str(e))
    return rows


def _report(problems: list[str], found: list[str], max_report: int, what: str) -> None:
    problems.extend(found[:max_report])
    if len(found) > max_report:
        problems.append(f"... and {len(found) - max_report} more {what}")


def _check_sorted_unique(path: Path, rows, problems: list[str], max_report: int) -> dict:
    """Check byte-order sorting and unique keys; returns {key: (lineno, fields)} (first wins)."""
    unsorted, dups = [], []
    first: dict[str, tuple[int, list[str]]] = {}
    prev_key, prev_line = None, 0
    for lineno, fields in rows:
        key = fields[0]
        if prev_key is not None and key < prev_key:
            unsorted.append(
                f"{path}:{lineno}: not sorted (LC_ALL=C): {key!r} after {prev_key!r} "
                f"(line {prev_line}); run fix_data_dir"
            )
        if key in first:
            dups.append(f"{path}:{lineno}: duplicate key {key!r} (first on line {first[key][0]})")
        else:
            first[key] = (lineno, fields)
        prev_key, prev_line = key, lineno
    _report(problems, unsorted, max_report, f"unsorted lines in {path.name}")
    _report(problems, dups, max_report, f"duplicate keys in {path.name}")
    return first


def _check_same_keys(a_name, a: dict, b_name, b: dict, problems, max_report) -> None:
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    _report(problems, [f"{a_name}:{a[k][0]}: {k!r} is not in {b_name}" for k in only_a],
            max_report, f"keys of {a_name} missing from {b_name}")
    _report(problems, [f"{b_name}:{b[k][0]}: {k!r} is not in {a_name}" for k in only_b],
            max_report, f"keys of {b_name} missing from {a_name}")


def check_audio_file(spec: str, min_duration: float = 0.0, allow_pipes: bool = False
                     ) -> str | None:
    """Decode one ``wav.scp`` value; None when fine, else why not.

    The reason is ``missing: no such file: PATH``, ``unreadable: ...``,
    ``truncated: the header says N samples, the file holds M``, ``low_rate``,
    ``all_zero``, ... A piped value (``cmd |``) is run only with ``allow_pipes``.
    """
    try:
        blob = read_bytes(spec, allow_pipes)
        wav, rate = decode_bytes(blob, spec)
    except BadAudio as e:
        return str(e)
    note = None if is_piped(spec) else truncation(blob, wav.shape[0])
    if note:
        return note
    try:
        check_waveform(wav, rate, min_duration)
    except BadAudio as e:
        return str(e)
    return None


def _parallel_map(fn: Callable, items: list, num_threads: int, desc: str) -> list:
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, disable=None))


def validate_data_dir(
    path: str | os.PathLike,
    check_audio: bool = True,
    decode: bool = False,
    min_duration: float = 0.0,
    num_threads: int = 4,
    max_report: int = 5,
    allow_pipes: bool = False,
) -> list[str]:
    """Check a data dir; returns the problems (empty when valid), each ``file:line: what``.

    Checks: required files present; lines well formed; every file sorted in byte
    order with unique keys; wav.scp and utt2spk (and utt2dur) have the same
    utterances; spk2utt is exactly utt2spk inverted; utt2dur values are positive
    numbers; every audio path exists (``check_audio``). With ``decode`` every
    file is decoded and *all* bad ones are listed (unreadable, empty, all zero,
    NaN/inf, below 8 kHz, shorter than ``min_duration`` seconds, or a WAVE file
    shorter than its header claims). Piped entries (``cmd |``) are problems
    unless ``allow_pipes``; then they are not checked for existence, and
    ``decode`` runs them. Other kinds report their first ``max_report`` lines
    and a count.
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: no such data dir"]
    problems: list[str] = []
    missing = [n for n in REQUIRED_FILES if not (path / n).is_file()]
    for name in missing:
        hint = " (fix_data_dir regenerates it)" if name == "spk2utt" else ""
        problems.append(f"{path / name}: missing{hint}")
    if "wav.scp" in missing or "utt2spk" in missing:
        return problems

    wav_p, u2s_p, s2u_p, dur_p = (path / n for n in ("wav.scp", "utt2spk", "spk2utt", "utt2dur"))
    seg_p = path / "segments"
    wav = _check_sorted_unique(wav_p, _rows(wav_p, 2, 2, problems), problems, max_report)
    u2s = _check_sorted_unique(u2s_p, _rows(u2s_p, 2, 2, problems), problems, max_report)
    if not u2s and not any(str(u2s_p) in p for p in problems):
        problems.append(f"{u2s_p}: no utterances (an empty data dir)")
    bad_spk = [_space_in_key(u2s_p, ln, f, wav) for ln, f in u2s.values()
               if len(f[1].split()) != 1]
    _report(problems, bad_spk, max_report, "bad speaker ids")
    utts = wav  # what utt2spk's keys are checked against: wav.scp, or segments
    if seg_p.is_file():
        durations = None
        if check_audio or decode:
            durations = _parallel_map(lambda k: _duration(wav[k][1][1], allow_pipes),
                                      list(wav), num_threads, "recording durations")
            durations = dict(zip(wav, durations, strict=True))
        segs, seg_problems = parse_segments(seg_p, wav, durations)
        _report(problems, seg_problems, max_report, f"bad lines in {seg_p.name}")
        seg_rows = _check_sorted_unique(seg_p, _rows(seg_p, 4, 4, []), [], max_report)
        utts = {u: seg_rows[u] for u in segs}
        _check_same_keys(seg_p, seg_rows, u2s_p, u2s, problems, max_report)
    else:
        _check_same_keys(wav_p, wav, u2s_p, u2s, problems, max_report)

    if s2u_p.is_file():
        s2u = _check_sorted_unique(s2u_p, _rows(s2u_p, 2, None, problems), problems, max_report)
        _check_spk2utt(s2u_p, s2u, u2s, problems, max_report)

    if dur_p.is_file():
        dur = _check_sorted_unique(dur_p, _rows(dur_p, 2, 2, problems), problems, max_report)
        _check_same_keys(seg_p if utts is not wav else wav_p, utts, dur_p, dur, problems,
                         max_report)
        bad_dur = []
        for key, (ln, f) in dur.items():
            try:
                ok = float(f[1]) > 0
            except ValueError:
                ok = False
            if not ok:
                bad_dur.append(f"{dur_p}:{ln}: {key!r}: duration {f[1]!r} is not a positive number")
        _report(problems, bad_dur, max_report, "bad durations")

    if check_audio or decode:
        piped = [(k, ln, f[1]) for k, (ln, f) in wav.items() if is_piped(f[1])]
        if not allow_pipes:
            _report(problems, [f"{wav_p}:{ln}: {k!r}: {PIPES_NEED_FLAG}" for k, ln, _ in piped],
                    max_report, "piped wav.scp entries")
        files = [(k, ln, f[1]) for k, (ln, f) in wav.items() if not is_piped(f[1])]
        exists = _parallel_map(lambda item: os.path.isfile(item[2]), files, num_threads,
                               "checking paths") if files else []
        absent = [f"{wav_p}:{ln}: {k!r}: {not_a_file(p) or f'no such file: {p}'}"
                  for (k, ln, p), ok in zip(files, exists, strict=True) if not ok]
        _report(problems, absent, max_report, "missing audio files")
        if decode:
            present = [item for item, ok in zip(files, exists, strict=True) if ok]
            if allow_pipes:
                present = sorted(present + piped, key=lambda item: item[1])
            reasons = _parallel_map(
                lambda item: check_audio_file(item[2], min_duration, allow_pipes),
                present, num_threads, "decoding")
            for (k, ln, p), why in zip(present, reasons, strict=True):
                if why is not None:  # decode lists every bad file, not just the first ones
                    problems.append(f"{wav_p}:{ln}: {k!r}: bad audio {p}: {why}")
    return problems


def _space_in_key(u2s_p: Path, ln: int, fields: list[str], wav: dict) -> str:
    """The message for a speaker with spaces: a key with a space when wav.scp agrees."""
    key, rest = fields[0], fields[1].split()
    in_wav = wav.get(key)
    if in_wav is not None and in_wav[1][1].split()[0] == rest[0]:
        return (f"{u2s_p}:{ln} and wav.scp:{in_wav[0]}: the key {key + ' ' + rest[0]!r} "
                "contains a space (keys cannot contain whitespace)")
    return f"{u2s_p}:{ln}: speaker {fields[1]!r} contains spaces"


def _duration(spec: str, allow_pipes: bool) -> float | None:
    """Seconds of one wav.scp value (its header; a pipe is run only with allow_pipes)."""
    if is_piped(spec):
        if not allow_pipes:
            return None
        try:
            wav_, rate = decode_bytes(read_bytes(spec, allow_pipes), spec)
        except BadAudio:
            return None
        return wav_.shape[0] / rate if rate else None
    try:
        info = sf.info(spec)
    except Exception:  # libsndfile raises several types; unreadable files are reported elsewhere
        return None
    return info.frames / info.samplerate if info.samplerate else None


def _check_spk2utt(s2u_p: Path, s2u: dict, u2s: dict, problems: list[str], max_report: int):
    bad = []
    seen: dict[str, str] = {}
    for spk, (ln, fields) in s2u.items():
        utts = fields[1:]
        if utts != sorted(utts):
            bad.append(f"{s2u_p}:{ln}: utterances of {spk!r} are not sorted")
        for utt in utts:
            if utt in seen:
                bad.append(f"{s2u_p}:{ln}: {utt!r} listed again (already under {seen[utt]!r})")
                continue
            seen[utt] = spk
            if utt not in u2s:
                bad.append(f"{s2u_p}:{ln}: {utt!r} (speaker {spk!r}) is not in utt2spk")
            elif u2s[utt][1][1] != spk:
                bad.append(f"{s2u_p}:{ln}: {utt!r} is under {spk!r} but utt2spk line "
                           f"{u2s[utt][0]} says {u2s[utt][1][1]!r}")
    for utt, (ln, fields) in u2s.items():
        if utt not in seen:
            bad.append(f"{s2u_p.parent / 'utt2spk'}:{ln}: {utt!r} (speaker {fields[1]!r}) "
                       "is missing from spk2utt")
    _report(problems, bad, max_report, "utt2spk/spk2utt disagreements")


# ------------------------------------------------------------------ fixing
@dataclass
class FixReport:
    """What :func:`fix_data_dir` kept and dropped; ``dropped`` maps a reason to keys."""

    kept: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # malformed lines, repeated keys
    backup: Path | None = None  # where the originals went (None: nothing was changed)

    def add(self, reason: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.dropped.setdefault(reason, []).extend(keys)

    @property
    def num_dropped(self) -> int:
        return len({k for ks in self.dropped.values() for k in ks})

    def summary(self) -> str:
        lines = [f"kept {self.kept} utterances, dropped {self.num_dropped}"]
        for reason, keys in self.dropped.items():
            lines.append(f"  {reason}: {len(keys)} (e.g. {', '.join(map(repr, keys[:3]))})")
        lines.extend(f"  {note}" for note in self.notes)
        lines.append(f"  originals in {self.backup}" if self.backup is not None
                     else "  nothing changed")
        return "\n".join(lines)


def _lenient_table(path: Path, report: FixReport, name: str) -> dict[str, str]:
    """Read a 2-field table keeping the first of duplicate keys; malformed lines dropped.

    A line that is not UTF-8 is a ValueError naming the file and line.
    """
    out: dict[str, str] = {}
    malformed, dups = [], []
    for lineno, line in text_lines(path):
        fields = line.strip().split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2:
            malformed.append(f"{name}:{lineno}")
        elif fields[0] in out:
            dups.append(fields[0])
        else:
            out[fields[0]] = fields[1]
    if malformed:
        report.notes.append(
            f"dropped {len(malformed)} malformed line(s): {', '.join(malformed[:5])}"
        )
    if dups:
        report.notes.append(f"{name}: {len(dups)} repeated key(s), first line kept: {dups[:5]}")
    return out


def compute_utt2dur(wav: dict[str, str], num_threads: int = 4,
                    allow_pipes: bool = False) -> dict[str, float | None]:
    """Duration in seconds of each utterance (None when it cannot be read).

    Files: from the header (libsndfile counts the frames a truncated file really
    holds); piped entries (with ``allow_pipes``): the command is run and decoded.
    """

    keys = list(wav)
    durs = _parallel_map(lambda k: _duration(wav[k], allow_pipes), keys, num_threads, "utt2dur")
    return dict(zip(keys, durs, strict=True))


def utt2spk_keys_look_like_segments(u2s: dict[str, str], wav: dict[str, str]) -> bool:
    """True when no utterance of utt2spk is a key of wav.scp (both non-empty)."""
    return bool(u2s) and bool(wav) and not set(u2s) & set(wav)


def next_backup_dir(path: Path) -> Path:
    """``path/.backup`` if free, else the first free ``.backup.1``, ``.backup.2``, ..."""
    candidate, i = path / ".backup", 0
    while candidate.exists():
        i += 1
        candidate = path / f".backup.{i}"
    return candidate


def _render(rows) -> str:
    return "".join(" ".join(str(x) for x in row) + "\n" for row in rows)


def fix_data_dir(
    path: str | os.PathLike,
    check_audio: bool = False,
    utt2dur: bool = False,
    num_threads: int = 4,
    allow_pipes: bool = False,
) -> FixReport:
    """Make a data dir valid in place; returns what was dropped.

    Keeps the utterances present in ``wav.scp``, ``utt2spk`` and every other
    ``utt2*`` file (``utt2dur`` included), drops malformed lines and repeated
    keys (the first is kept), optionally drops utterances whose audio file is
    missing (``check_audio``) and computes ``utt2dur`` from the file headers
    (``utt2dur``). Writes every file sorted, regenerates ``spk2utt``.

    Before changing anything, the original files are copied to
    ``<dir>/.backup/``, or, when that exists (an earlier run), to the next free
    ``.backup.1/``, ``.backup.2/``, ...; a dir that is already valid is left
    untouched (no backup). Piped ``wav.scp`` entries (``cmd |``) are kept as
    they are; ``check_audio`` and ``utt2dur`` refuse them (ValueError naming the
    key, nothing written) unless ``allow_pipes``, and then ``utt2dur`` runs them.
    A file that is not UTF-8 is a ValueError naming it and the line.

    With a Kaldi ``segments`` file the utterances are its keys (``wav.scp`` is
    keyed by recording): bad segment lines (malformed, out of range,
    overlapping, an unknown recording) drop their utterance, and ``wav.scp``
    keeps the recordings still used. When nothing would be left, nothing is
    changed: a ValueError says why.
    """
    path = Path(path)
    report = FixReport()
    for name in ("wav.scp", "utt2spk"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing; a data dir needs wav.scp and utt2spk")
    wav = _lenient_table(path / "wav.scp", report, "wav.scp")
    u2s = _lenient_table(path / "utt2spk", report, "utt2spk")
    bad_spk = [u for u, s in u2s.items() if len(s.split()) != 1]
    report.add("speaker with spaces in utt2spk", bad_spk)
    for u in bad_spk:
        del u2s[u]
    extra_names = sorted(p.name for p in path.glob("utt2*") if p.is_file() and p.name != "utt2spk")
    extra = {n: _lenient_table(path / n, report, n) for n in extra_names}
    if "utt2dur" in extra:
        bad = []
        for u, d in extra["utt2dur"].items():
            try:
                if float(d) <= 0:
                    bad.append(u)
            except ValueError:
                bad.append(u)
        report.add("bad duration in utt2dur", bad)
        for u in bad:
            del extra["utt2dur"][u]

    segs = None  # with segments: utt -> "recording start end" (as written), wav keyed by recording
    if (path / "segments").is_file():
        seg_text = _lenient_table(path / "segments", report, "segments")
        durations = {r: _duration(w, False) for r, w in wav.items() if not is_piped(w)}
        good, seg_problems = parse_segments(path / "segments", wav, durations)
        bad = sorted(set(seg_text) - set(good))
        report.add("bad line in segments", bad)
        if seg_problems:
            report.notes.append(f"segments: {len(seg_problems)} problem(s): "
                                + "; ".join(seg_problems[:3]))
        segs = {u: seg_text[u] for u in good if u in seg_text}
        tables = {"segments": segs, "utt2spk": u2s, **extra}
    else:
        tables = {"wav.scp": wav, "utt2spk": u2s, **extra}
    all_keys = set().union(*tables.values())
    keep = set(all_keys)
    for name, table in tables.items():
        report.add(f"not in {name}", sorted(all_keys - set(table)))
        keep &= set(table)

    def audio_of(utt: str) -> str:
        return wav[segs[utt].split()[0]] if segs is not None else wav[utt]

    if check_audio or utt2dur:
        piped = sorted(k for k in keep if is_piped(audio_of(k)))
        if piped and not allow_pipes:
            n = f"{len(piped)} {'entry' if len(piped) == 1 else 'entries'}"
            raise ValueError(f"{path / 'wav.scp'}: {PIPES_NEED_FLAG}: {n}, the first with key "
                             f"{piped[0]!r}; nothing was changed")
    if check_audio:
        missing = sorted(k for k in keep
                         if not is_piped(audio_of(k)) and not os.path.isfile(audio_of(k)))
        report.add("audio file missing", missing)
        keep -= set(missing)

    durs = None
    if utt2dur:
        computed = compute_utt2dur({k: audio_of(k) for k in sorted(keep)}, num_threads,
                                   allow_pipes)
        if segs is not None:  # a segment's duration, not its recording's
            for k, rec_dur in computed.items():
                _, start, end = segs[k].split()
                end_s = rec_dur if float(end) == -1 else min(float(end), rec_dur or 0.0)
                computed[k] = (end_s - float(start)
                               if rec_dur is not None and end_s > float(start) else None)
        unreadable = sorted(k for k, d in computed.items() if d is None)
        report.add("audio header unreadable (utt2dur)", unreadable)
        keep -= set(unreadable)
        durs = {k: d for k, d in computed.items() if d is not None and k in keep}
        extra.pop("utt2dur", None)

    keep_sorted = sorted(keep)
    if not keep_sorted:  # never leave a data dir empty: change nothing and say why
        why = "; ".join(f"{reason}: {len(keys)} (e.g. {keys[0]!r})"
                        for reason, keys in report.dropped.items()) or "the files list none"
        why += "".join(f"; {note}" for note in report.notes)
        hint = ("" if segs is not None or not (utt2spk_keys_look_like_segments(u2s, wav))
                else " (utt2spk's keys are not wav.scp's: a Kaldi segments file missing?)")
        raise ValueError(f"{path}: fixing would leave no utterances, so nothing was changed: "
                         f"{why}{hint}")
    new_u2s = {k: u2s[k] for k in keep_sorted}
    recs = sorted({segs[k].split()[0] for k in keep_sorted}) if segs is not None else keep_sorted
    new_text = {
        "wav.scp": _render((k, wav[k]) for k in recs),
        "utt2spk": _render((k, u2s[k]) for k in keep_sorted),
        "spk2utt": _render([s, *u] for s, u in utt2spk_to_spk2utt(new_u2s).items()),
    }
    if durs is not None:
        new_text["utt2dur"] = _render((k, f"{durs[k]:.4f}") for k in keep_sorted)
    if segs is not None:
        new_text["segments"] = _render((k, segs[k]) for k in keep_sorted)
    for name, table in extra.items():
        new_text[name] = _render((k, table[k]) for k in keep_sorted)
    report.kept = len(keep_sorted)
    changed = [n for n, text in new_text.items()
               if not (path / n).is_file() or (path / n).read_bytes() != text.encode("utf-8")]
    if not changed:
        logger.info("fix_data_dir %s: already valid, nothing changed (%d utterances)", path,
                    report.kept)
        return report

    backup = next_backup_dir(path)
    backup.mkdir()
    report.backup = backup
    for name in ["wav.scp", "utt2spk", "spk2utt", "segments", *extra_names]:
        if (path / name).is_file():
            shutil.copy2(path / name, backup / name)
    if segs is not None:
        for name, text in new_text.items():
            with atomic_write(path / name) as f:
                f.write(text)
    else:
        write_data_dir(path, {k: wav[k] for k in keep_sorted}, new_u2s, durs)
    for name, table in extra.items():
        write_table(path / name, ((k, table[k]) for k in keep_sorted))
    if report.dropped:
        write_table(backup / "dropped_utts",
                    ((k, reason.replace(" ", "_")) for reason, ks in report.dropped.items()
                     for k in ks))
    logger.info("fix_data_dir %s: %s", path, report.summary())
    return report
