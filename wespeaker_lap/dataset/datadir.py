"""Kaldi data directories: read, write, validate, fix.

A data dir holds ``wav.scp`` (``utt path``), ``utt2spk`` (``utt spk``),
``spk2utt`` (``spk utt1 utt2 ...``) and, when computed, ``utt2dur``
(``utt seconds``). Every file is sorted in byte order (``LC_ALL=C sort``; for
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
from wespeaker_lap.io.files import read_scp, read_table, read_utt2dur, text_lines, write_table

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "utt2spk", "spk2utt")


@dataclass
class DataDir:
    """An in-memory data dir. Dicts keep file order; :func:`write_data_dir` sorts."""

    path: Path
    wav: dict[str, str]
    utt2spk: dict[str, str]
    spk2utt: dict[str, list[str]] = field(default_factory=dict)
    utt2dur: dict[str, float] | None = None

    @property
    def utts(self) -> list[str]:
        return list(self.wav)

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
            raise ValueError(f"{path / 'utt2spk'}: utterance {utt!r}: speaker {spk!r} has spaces")
    if (path / "spk2utt").is_file():
        spk2utt = {row[0]: row[1:] for row in read_table(path / "spk2utt", 2, None)}
    else:
        spk2utt = utt2spk_to_spk2utt(utt2spk)
    utt2dur = read_utt2dur(path / "utt2dur") if (path / "utt2dur").is_file() else None
    return DataDir(path, wav, utt2spk, spk2utt, utt2dur)


def write_data_dir(
    path: str | os.PathLike,
    wav: dict[str, str],
    utt2spk: dict[str, str],
    utt2dur: dict[str, float] | None = None,
) -> DataDir:
    """Write ``wav.scp``, ``utt2spk``, ``spk2utt`` (regenerated) and optional ``utt2dur``.

    Everything is sorted (byte order) and written atomically. Keys of
    ``utt2spk``/``utt2dur`` must match ``wav`` exactly.
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
    wav = _check_sorted_unique(wav_p, _rows(wav_p, 2, 2, problems), problems, max_report)
    u2s = _check_sorted_unique(u2s_p, _rows(u2s_p, 2, 2, problems), problems, max_report)
    bad_spk = [f"{u2s_p}:{ln}: speaker {f[1]!r} contains spaces" for ln, f in u2s.values()
               if len(f[1].split()) != 1]
    _report(problems, bad_spk, max_report, "bad speaker ids")
    _check_same_keys(wav_p, wav, u2s_p, u2s, problems, max_report)

    if s2u_p.is_file():
        s2u = _check_sorted_unique(s2u_p, _rows(s2u_p, 2, None, problems), problems, max_report)
        _check_spk2utt(s2u_p, s2u, u2s, problems, max_report)

    if dur_p.is_file():
        dur = _check_sorted_unique(dur_p, _rows(dur_p, 2, 2, problems), problems, max_report)
        _check_same_keys(wav_p, wav, dur_p, dur, problems, max_report)
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
        absent = [f"{wav_p}:{ln}: {k!r}: no such file: {p}"
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

    def dur(spec: str) -> float | None:
        if is_piped(spec):
            try:
                wav_, rate = decode_bytes(read_bytes(spec, allow_pipes), spec)
            except BadAudio:
                return None
            return wav_.shape[0] / rate if rate else None
        try:
            info = sf.info(spec)
        except Exception:
            return None
        return info.frames / info.samplerate if info.samplerate else None

    keys = list(wav)
    durs = _parallel_map(lambda k: dur(wav[k]), keys, num_threads, "utt2dur")
    return dict(zip(keys, durs, strict=True))


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

    tables = {"wav.scp": wav, "utt2spk": u2s, **extra}
    all_keys = set().union(*tables.values())
    keep = set(all_keys)
    for name, table in tables.items():
        report.add(f"not in {name}", sorted(all_keys - set(table)))
        keep &= set(table)
    if check_audio or utt2dur:
        piped = sorted(k for k in keep if is_piped(wav[k]))
        if piped and not allow_pipes:
            n = f"{len(piped)} {'entry' if len(piped) == 1 else 'entries'}"
            raise ValueError(f"{path / 'wav.scp'}: {PIPES_NEED_FLAG}: {n}, the first with key "
                             f"{piped[0]!r}; nothing was changed")
    if check_audio:
        missing = sorted(k for k in keep if not is_piped(wav[k]) and not os.path.isfile(wav[k]))
        report.add("audio file missing", missing)
        keep -= set(missing)

    durs = None
    if utt2dur:
        computed = compute_utt2dur({k: wav[k] for k in sorted(keep)}, num_threads,
                                   allow_pipes)
        unreadable = sorted(k for k, d in computed.items() if d is None)
        report.add("audio header unreadable (utt2dur)", unreadable)
        keep -= set(unreadable)
        durs = {k: d for k, d in computed.items() if d is not None and k in keep}
        extra.pop("utt2dur", None)

    keep_sorted = sorted(keep)
    new_u2s = {k: u2s[k] for k in keep_sorted}
    new_text = {
        "wav.scp": _render((k, wav[k]) for k in keep_sorted),
        "utt2spk": _render((k, u2s[k]) for k in keep_sorted),
        "spk2utt": _render([s, *u] for s, u in utt2spk_to_spk2utt(new_u2s).items()),
    }
    if durs is not None:
        new_text["utt2dur"] = _render((k, f"{durs[k]:.4f}") for k in keep_sorted)
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
    for name in ["wav.scp", "utt2spk", "spk2utt", *extra_names]:
        if (path / name).is_file():
            shutil.copy2(path / name, backup / name)
    write_data_dir(path, {k: wav[k] for k in keep_sorted}, new_u2s, durs)
    for name, table in extra.items():
        write_table(path / name, ((k, table[k]) for k in keep_sorted))
    if report.dropped:
        write_table(backup / "dropped_utts",
                    ((k, reason.replace(" ", "_")) for reason, ks in report.dropped.items()
                     for k in ks))
    logger.info("fix_data_dir %s: %s", path, report.summary())
    return report
