"""Training lists in WeSpeaker's formats, noise/RIR lists, and the speaker-to-id map.

* ``raw.list``: one JSON object a line, ``{"key": utt, "spk": speaker, "wav": path}``
  (plus ``"dur"`` in seconds when the data dir has ``utt2dur``, and
  ``"start"``/``"end"`` in seconds for a Kaldi segment of a longer recording).
* ``shard.list``: one tar path a line; each tar holds ``<name>.<ext>`` (the audio
  file's bytes, unchanged; a segment is cut out and stored as ``<name>.wav``)
  and ``<name>.spk`` (the speaker, UTF-8) per utterance, where ``<name> = encode_key(key)``.
* noise / RIR lists: the raw-list format with a ``"type"`` field instead of a
  speaker: ``{"key", "wav", "type"}`` where type is ``noise``, ``music``, ``babble``
  (MUSAN's ``speech`` part, used as babble) or ``rir``.
* ``spk2id``: ``speaker index`` lines, indices 0..S-1 in sorted speaker order.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tarfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import quote, unquote

import soundfile as sf
from tqdm import tqdm

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.dataset.audio import (
    AUDIO_EXTENSIONS,
    PIPES_NEED_FLAG,
    BadAudio,
    is_piped,
    load_segment,
    read_bytes,
)
from wespeaker_lap.dataset.datadir import DataDir
from wespeaker_lap.io.files import (
    atomic_path,
    atomic_write,
    read_scp,
    read_table,
    text_lines,
    write_table,
)

logger = logging.getLogger(__name__)

#: Types a noise/RIR list line may carry; ``speech`` is read as ``babble``.
NOISE_TYPES = ("noise", "music", "babble")
SOURCE_TYPES = (*NOISE_TYPES, "rir")
_TYPE_ALIASES = {"speech": "babble"}


# ---------------------------------------------------------------- tar member names
def encode_key(key: str) -> str:
    """Make an utterance key safe as a tar member name (no ``/``, no ``%`` ambiguity).

    Percent-encodes every byte outside ``[A-Za-z0-9_.~-]``; :func:`decode_key`
    inverts it exactly. VoxCeleb's ``id10001/1zcIwhmdeo4/00001.wav`` becomes
    ``id10001%2F1zcIwhmdeo4%2F00001.wav``.

    >>> decode_key(encode_key("id10001/1zcIwhmdeo4/00001.wav"))
    'id10001/1zcIwhmdeo4/00001.wav'
    """
    if not key:
        raise ValueError("empty utterance key")
    return quote(key, safe="")


def decode_key(name: str) -> str:
    """Inverse of :func:`encode_key` (plain WeSpeaker member names decode to themselves)."""
    return unquote(name)


def split_member_name(name: str) -> tuple[str, str]:
    """``"<encoded key>.<ext>"`` -> (key, ext); ext lower-cased. Raises ValueError if no ext."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        raise ValueError(f"tar member {name!r} has no '.<ext>' suffix")
    return decode_key(stem), ext.lower()


# ---------------------------------------------------------------- raw lists
def write_raw_list(path: str | os.PathLike, entries: Iterable[dict]) -> int:
    """Write JSON lines atomically; returns the number of lines."""
    n = 0
    with atomic_write(path) as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_raw_list(
    path: str | os.PathLike, required: Sequence[str] = ("key", "wav")
) -> list[dict]:
    """Read a JSON-lines list; every line must be an object with the ``required`` fields.

    Errors name the file and line. Duplicate keys are errors too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such list: {path}")
    entries: list[dict] = []
    seen: dict[str, int] = {}
    for lineno, line in text_lines(path):  # a non-UTF-8 line: ValueError naming it
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            hint = ("; it names a tar file: a shard list? (data_type: shard)"
                    if line.endswith(".tar") else "")
            raise ConfigError(f"{path}:{lineno}: not JSON ({e.msg}): {line[:120]!r}{hint}") \
                from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {line[:120]!r}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing field(s) {missing}: {line[:120]!r}")
        key = obj.get("key")
        if key is not None:
            if key in seen:
                raise ValueError(
                    f"{path}:{lineno}: duplicate key {key!r} (first on line {seen[key]})"
                )
            seen[key] = lineno
        entries.append(obj)
    return entries


def raw_entries_from_data_dir(data: DataDir) -> list[dict]:
    """``{"key", "spk", "wav"[, "dur"]}`` per utterance of a data dir, in wav.scp order.

    With Kaldi ``segments``, one entry per segment, in segments order, with its
    recording's ``wav`` and ``"start"``/``"end"`` in seconds (no ``end``: to the
    end of the recording); the loaders read only those samples. Every
    utterance needs a speaker in utt2spk (run fix_data_dir first); an empty
    data dir is a ValueError naming it.
    """
    utts = data.utts
    if not utts:
        raise ValueError(f"{data.path}: empty data dir (no utterances in "
                         f"{'segments' if data.segments is not None else 'wav.scp'})")
    missing = [k for k in utts if k not in data.utt2spk]
    if missing:
        what = "segments" if data.segments is not None else "wav.scp"
        raise ValueError(
            f"{data.path}: {len(missing)} utterance(s) of {what} have no speaker in utt2spk "
            f"(first: {missing[:3]}); run `python -m wespeaker_lap.bin.fix_data_dir {data.path}`"
        )
    out = []
    for key in utts:
        if data.segments is not None:
            seg = data.segments[key]
            entry = {"key": key, "spk": data.utt2spk[key], "wav": data.wav[seg.recording],
                     "start": seg.start}
            if seg.end is not None:
                entry["end"] = seg.end
                entry["dur"] = round(seg.end - seg.start, 4)
        else:
            entry = {"key": key, "spk": data.utt2spk[key], "wav": data.wav[key]}
        if data.utt2dur is not None and key in data.utt2dur:
            entry["dur"] = data.utt2dur[key]
        out.append(entry)
    return out


def check_pipes(entries: Sequence[dict], allow_pipes: bool, where: str = "data list") -> int:
    """Refuse piped ``wav`` values (``"cmd |"``) unless ``allow_pipes``; returns how many.

    The error names the first such key, so it is raised before any work starts.
    """
    piped = [e["key"] for e in entries if "wav" in e and is_piped(e["wav"])]
    if piped and not allow_pipes:
        raise ValueError(f"{where}: {PIPES_NEED_FLAG}: {_entries(len(piped))}, the first "
                         f"with key {piped[0]!r}")
    if piped:
        logger.debug("%s: %d piped wav.scp entries will be run with a shell", where, len(piped))
    return len(piped)


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def compare_speakers(entries: Sequence[dict], utt2spk: dict[str, str]
                     ) -> tuple[list[str], list[str]]:
    """Keys whose list speaker differs from ``utt2spk``, and keys absent from it."""
    differ = [e["key"] for e in entries
              if e["key"] in utt2spk and e.get("spk") != utt2spk[e["key"]]]
    absent = [e["key"] for e in entries if e["key"] not in utt2spk]
    return differ, absent


# ---------------------------------------------------------------- noise / RIR lists
def normalize_source_type(kind: str) -> str:
    """Map a noise/RIR type name to one of :data:`SOURCE_TYPES` (``speech`` -> ``babble``)."""
    kind = _TYPE_ALIASES.get(kind, kind)
    if kind not in SOURCE_TYPES:
        raise ValueError(f"unknown source type {kind!r}; valid: {list(SOURCE_TYPES)} (or 'speech')")
    return kind


def find_audio_files(folder: str | os.PathLike) -> list[Path]:
    """All audio files under ``folder`` (recursive, sorted by relative path)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"no such folder: {folder}")
    exts = {"." + e for e in AUDIO_EXTENSIONS}
    return sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def source_entries_from_folder(folder: str | os.PathLike, kind: str) -> list[dict]:
    """``{"key": relative path, "wav": absolute path, "type": kind}`` for each audio file."""
    kind = normalize_source_type(kind)
    folder = Path(folder)
    files = find_audio_files(folder)
    if not files:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return [
        {"key": p.relative_to(folder).as_posix(), "wav": str(p.resolve()), "type": kind}
        for p in files
    ]


def source_entries_from_data_dir(data: DataDir | str | os.PathLike, kind: str) -> list[dict]:
    """``{"key", "wav", "type"}`` for each line of a data dir's wav.scp.

    ``data`` may be a :class:`DataDir` or a directory holding just ``wav.scp``
    (noise and RIR dirs have no speakers). ``kind="auto"`` takes each
    utterance's type from the dir's ``utt2type`` (``key type`` lines).
    """
    if isinstance(data, DataDir):
        path, wav = Path(data.path), data.wav
    else:
        path = Path(data)
        wav = read_scp(path / "wav.scp")
    if kind != "auto":
        kind = normalize_source_type(kind)
        return [{"key": k, "wav": w, "type": kind} for k, w in wav.items()]
    types = read_scp(path / "utt2type")
    missing = [k for k in wav if k not in types]
    if missing:
        raise ValueError(f"{path / 'utt2type'}: no type for {len(missing)} utterance(s) of "
                         f"wav.scp (first: {missing[:3]})")
    out = []
    for k, w in wav.items():
        try:
            out.append({"key": k, "wav": w, "type": normalize_source_type(types[k])})
        except ValueError as e:
            raise ValueError(f"{path / 'utt2type'}: {k!r}: {e}") from None
    return out


def read_source_lists(
    paths: str | os.PathLike | Sequence[str | os.PathLike], default_type: str | None = None
) -> dict[str, list[str]]:
    """Read one or more noise/RIR lists -> ``{type: [audio paths]}``.

    A line without ``"type"`` gets ``default_type`` (an error when that is None).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: dict[str, list[str]] = {}
    for path in paths:
        required = ("key", "wav") if default_type else ("key", "wav", "type")
        for i, entry in enumerate(read_raw_list(path, required=required), 1):
            try:
                kind = normalize_source_type(entry.get("type", default_type))
            except ValueError as e:
                raise ValueError(f"{path}: entry {i} ({entry['key']!r}): {e}") from None
            out.setdefault(kind, []).append(entry["wav"])
    return out


# ---------------------------------------------------------------- speaker ids
def make_spk2id(speakers: Iterable[str]) -> dict[str, int]:
    """Sorted unique speakers (byte order) -> 0..S-1."""
    return {spk: i for i, spk in enumerate(sorted(set(speakers)))}


def write_spk2id(path: str | os.PathLike, spk2id: dict[str, int]) -> None:
    """Write ``speaker index`` lines, in index order."""
    write_table(path, ((s, i) for s, i in sorted(spk2id.items(), key=lambda kv: kv[1])))


def read_spk2id(path: str | os.PathLike) -> dict[str, int]:
    """Read a ``speaker index`` table; indices must be exactly 0..S-1."""
    out: dict[str, int] = {}
    for spk, idx in read_table(path, 2, 2):
        if spk in out:
            raise ValueError(f"{path}: duplicate speaker {spk!r}")
        try:
            out[spk] = int(idx)
        except ValueError:
            raise ValueError(f"{path}: speaker {spk!r} has a non-integer index {idx!r}") from None
    check_spk2id(out, str(path))
    return out


def check_spk2id(spk2id: dict[str, int], where: str = "spk2id") -> None:
    """Indices must be a permutation of 0..S-1 (speed perturbation adds k*S to them)."""
    if sorted(spk2id.values()) != list(range(len(spk2id))):
        raise ValueError(f"{where}: indices must be exactly 0..{len(spk2id) - 1}, each once")


# ---------------------------------------------------------------- shards
def _write_one_shard(tar_path: Path, entries: Sequence[dict], allow_pipes: bool = False) -> Path:
    """Write one tar atomically: a temporary file renamed into place when complete.

    A piped entry's command output is stored as ``<name>.wav``.
    """
    with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w") as tar:
        for entry in entries:
            key, spk, wav = entry["key"], entry["spk"], entry["wav"]
            if "start" in entry:  # a Kaldi segment: cut it out, stored as a WAVE file
                name = encode_key(key)
                _add_bytes(tar, f"{name}.spk", spk.encode("utf-8"))
                _add_bytes(tar, f"{name}.wav", _segment_bytes(entry, allow_pipes))
                continue
            if is_piped(wav):
                ext = "wav"
            else:
                if not Path(wav).is_file():
                    raise FileNotFoundError(f"utterance {key!r}: no such audio file {wav}")
                ext = Path(wav).suffix.lower().lstrip(".") or "wav"
            try:
                blob = read_bytes(wav, allow_pipes)
            except BadAudio as e:  # a failed command
                raise ValueError(f"utterance {key!r}: {e}") from None
            name = encode_key(key)
            _add_bytes(tar, f"{name}.spk", spk.encode("utf-8"))
            _add_bytes(tar, f"{name}.{ext}", blob)
    return tar_path


def _segment_bytes(entry: dict, allow_pipes: bool) -> bytes:
    """A segment entry's samples (read by seeking) as WAVE bytes, in its file's sample format."""
    end = entry.get("end")
    try:
        wav, rate = load_segment(entry["wav"], float(entry["start"]),
                                 None if end is None or float(end) == -1 else float(end),
                                 allow_pipes)
    except BadAudio as e:
        raise ValueError(f"utterance {entry['key']!r}: {e}") from None
    subtype = "FLOAT"
    if not is_piped(entry["wav"]):
        src = sf.info(entry["wav"]).subtype
        subtype = src if src in sf.available_subtypes("WAV") else "FLOAT"
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(data))


def make_shard_list(
    entries: Sequence[dict],
    shard_dir: str | os.PathLike,
    list_path: str | os.PathLike,
    num_utts_per_shard: int = 1000,
    num_threads: int = 4,
    shuffle: bool = True,
    seed: int = 0,
    prefix: str = "shards",
    allow_pipes: bool = False,
) -> list[Path]:
    """Pack ``{"key","spk","wav"}`` entries into tar shards and write ``shard.list``.

    Shards are written in parallel (threads: the work is file I/O) with a
    progress bar; each tar is renamed into place only when complete, and the
    list (absolute paths) is written last, atomically, after every shard
    succeeded. An old list at ``list_path`` is removed first, so an interrupted
    run leaves no list at all rather than one naming half-written shards.
    ``shuffle`` mixes speakers across shards (seeded). Piped ``wav`` values
    (``"cmd |"``) are run (with a shell) only when ``allow_pipes``.
    """
    if num_utts_per_shard < 1:
        raise ValueError(f"num_utts_per_shard must be >= 1, got {num_utts_per_shard}")
    if not entries:
        raise ValueError("no utterances to shard")
    check_pipes(entries, allow_pipes, "make_shard_list")
    list_path = Path(list_path)
    if list_path.exists():
        list_path.unlink()
    shard_dir = Path(shard_dir).resolve()
    shard_dir.mkdir(parents=True, exist_ok=True)
    entries = list(entries)
    if shuffle:
        random.Random(seed).shuffle(entries)
    chunks = [
        entries[i : i + num_utts_per_shard] for i in range(0, len(entries), num_utts_per_shard)
    ]
    width = max(6, len(str(len(chunks) - 1)))
    paths = [shard_dir / f"{prefix}_{i:0{width}d}.tar" for i in range(len(chunks))]
    with (
        ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool,
        tqdm(total=len(chunks), desc="shards", unit="shard", disable=None) as bar,
    ):
        futures = [pool.submit(_write_one_shard, p, c, allow_pipes)
                   for p, c in zip(paths, chunks, strict=True)]
        try:
            for fut in as_completed(futures):
                fut.result()
                bar.update(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    with atomic_write(list_path) as f:
        for p in paths:
            f.write(f"{p}\n")
    logger.info("wrote %d shards (%d utterances) to %s", len(paths), len(entries), shard_dir)
    return paths


def read_shard_list(path: str | os.PathLike) -> list[str]:
    """One tar path a line; blank lines skipped; an empty list is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such list: {path}")
    with open(path, encoding="utf-8") as f:
        shards = [line.strip() for line in f if line.strip()]
    if not shards:
        raise ValueError(f"{path}: empty shard list")
    if shards[0].startswith("{"):  # before any work: data_type shard given a raw list
        raise ConfigError(f"{path}: line 1 is a JSON object, so this is a raw list, not a "
                          "shard list; set data_type: raw (or give the shard.list)")
    return shards


def read_data_list(path: str | os.PathLike, data_type: str) -> list[dict]:
    """A training/eval list as entries: raw -> its JSON objects, shard -> ``{"shard": tar}``."""
    if data_type == "raw":
        return read_raw_list(path, required=("key", "wav"))
    if data_type == "shard":
        return [{"shard": s} for s in read_shard_list(path)]
    raise ValueError(f"unknown data_type {data_type!r}; valid: ['raw', 'shard']")
