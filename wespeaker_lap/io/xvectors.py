"""Embedding files: Kaldi ``xvector.ark/scp`` tables, ``mean_vec.npy`` and ``.npy`` arrays.

One home for reading and writing speaker embeddings. Writers go through
:func:`~wespeaker_lap.io.files.atomic_path`, so an interrupted run never leaves a
half-written ark, scp or npy under its final name.

* :func:`write_xvectors`: ``{name}.ark`` + ``{name}.scp``
  (Kaldi binary float vectors, via kaldiio), keys sorted; read back with
  :meth:`EmbeddingTable.from_scp`.
* :class:`EmbeddingTable`: embeddings as one ``(N, D)`` float32 matrix plus
  ``key -> row`` (what scoring works on); :func:`load_embeddings` builds one from
  a dict or ``xvector.scp`` paths.
* :func:`save_npy` / :func:`load_mean_vec`: ``mean_vec.npy`` and other arrays.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import kaldiio
import numpy as np

from wespeaker_lap.io.files import atomic_path, strip_bom

_SHOW = 5  # keys shown in an error message


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically (the name is kept as given, no ``.npy`` added)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array))
    return Path(path)


def write_xvectors(embed_dir: str | os.PathLike, embeddings: Mapping[str, np.ndarray],
                   name: str = "xvector") -> tuple[Path, Path]:
    """Write ``{name}.ark`` + ``{name}.scp`` (keys sorted) atomically; returns their paths.

    The ark is written under a temporary name and the scp is rewritten to point
    at the final ark before both are renamed into place (ark first).
    """
    embed_dir = Path(embed_dir)
    embed_dir.mkdir(parents=True, exist_ok=True)
    ark, scp = embed_dir / f"{name}.ark", embed_dir / f"{name}.scp"
    keys = sorted(embeddings)
    # the inner block (ark) is renamed first, so a final scp never points at a missing ark
    with atomic_path(scp) as tmp_scp, atomic_path(ark) as tmp_ark:
        kaldiio.save_ark(str(tmp_ark), {k: np.asarray(embeddings[k], dtype=np.float32)
                                        for k in keys}, scp=str(tmp_scp))
        lines = tmp_scp.read_text(encoding="utf-8").splitlines()
        fixed = []
        for line in lines:
            key, loc = line.split(" ", 1)
            offset = loc.rsplit(":", 1)[1]
            fixed.append(f"{key} {ark}:{offset}\n")
        tmp_scp.write_text("".join(fixed), encoding="utf-8")
    return ark, scp


def _check_text_scp(path: Path) -> None:
    """An scp is text lines ``key ark:offset``: refuse ``.npy``, arks and other binaries early."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path}: a .npy array, not a Kaldi xvector.scp (key -> ark:offset "
                         "lines, as extract writes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the 4096-byte boundary
            raise ValueError(f"{path}: binary data, not a Kaldi xvector.scp (key -> ark:offset "
                             "text lines, as extract writes)") from None


def check_finite(x: np.ndarray, what: str, source: str, keys: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf, naming the first bad rows."""
    finite = np.isfinite(x)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1)) if x.ndim else [0]
    shown = [keys[i] for i in bad_rows[:_SHOW]] if keys is not None else list(
        bad_rows[:_SHOW]
    )
    raise ValueError(
        f"{source}: NaN or inf in {what}: {len(bad_rows)} rows, first: "
        f"{', '.join(str(s) for s in shown)}"
    )


class EmbeddingTable:
    """Embeddings as one float32 matrix ``(N, D)`` plus ``key -> row``.

    Build it from a dict ``key -> (D,) array`` with :meth:`from_dict` or from
    Kaldi ``xvector.scp`` files with :meth:`from_scp` (or :func:`load_embeddings`
    for either). NaN or inf in any embedding is an error.
    """

    def __init__(self, keys: list[str], matrix: np.ndarray, source: str = "<memory>"):
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(keys):
            raise ValueError(
                f"{source}: embeddings of shape {matrix.shape} for {len(keys)} keys; "
                "expected (num_keys, dim)"
            )
        if len(keys) == 0:
            raise ValueError(f"{source}: no embeddings")
        check_finite(matrix, "embeddings", source, keys)
        self.keys = keys
        self.matrix = matrix
        self.source = source
        self.index = {k: i for i, k in enumerate(keys)}
        if len(self.index) != len(keys):
            seen: set[str] = set()
            dup = next(k for k in keys if k in seen or seen.add(k))
            raise ValueError(f"{source}: duplicate embedding key {dup!r}")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @classmethod
    def from_dict(cls, emb: Mapping[str, np.ndarray], source: str = "<memory>") -> EmbeddingTable:
        keys = list(emb)
        if not keys:
            raise ValueError(f"{source}: no embeddings")
        try:
            matrix = np.stack([np.asarray(emb[k], dtype=np.float32).reshape(-1) for k in keys])
        except ValueError as e:
            raise ValueError(f"{source}: embeddings of different sizes: {e}") from None
        return cls(keys, matrix, source)

    @classmethod
    def from_scp(cls, paths: str | os.PathLike | Iterable[str | os.PathLike]) -> EmbeddingTable:
        """Read one or more Kaldi vector scp files (``xvector.scp``), keys in file order."""
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        keys: list[str] = []
        blocks: list[np.ndarray] = []
        names = []
        for p in paths:
            k, m = read_vector_scp(p)
            keys += k
            blocks.append(m)
            names.append(str(p))
        source = "+".join(names)
        if not keys:
            raise ValueError(f"{source}: no embeddings")
        if len({b.shape[1] for b in blocks if len(b)}) > 1:
            raise ValueError(f"{source}: embeddings of different sizes: "
                             f"{sorted({b.shape[1] for b in blocks if len(b)})}")
        return cls(keys, np.concatenate([b for b in blocks if len(b)]), source)

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row indices with -1 where missing, boolean found mask)."""
        try:  # every key known (the usual case): map is about twice as fast as a generator
            idx = np.array(list(map(self.index.__getitem__, keys)), dtype=np.int64)
        except KeyError:
            get = self.index.get
            idx = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        return idx, idx >= 0


#: What kaldiio writes before a float32 vector's data: binary flag, type token, int32 size.
_FV_HEAD = b"\0BFV \4"


def read_vector_scp(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(keys, (N, D) float32)`` of a Kaldi vector scp (``key ark_path:offset`` lines).

    Binary float32 vectors (what :func:`write_xvectors` and Kaldi write) are read
    straight from each ark, all entries of an ark at once; any other entry
    (double vectors, matrices, compressed data, pipes) goes through kaldiio.
    A line that is not ``key location``, a missing ark, a location past the end of
    its ark (a truncated file) or vectors of different sizes are errors naming
    the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such embedding scp: {path}")
    _check_text_scp(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text scp file (byte {e.start} is not UTF-8); "
                         "give the xvector.scp, not the .ark or an .npy") from None
    text = strip_bom(text, path)
    keys: list[str] = []
    locs: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'key ark_path:offset', got {line!r}")
        keys.append(fields[0])
        locs.append(fields[1])
    if not keys:
        return [], np.zeros((0, 0), dtype=np.float32)
    # binary float32 vectors, gathered per ark: (entry indices, (n, dim) block)
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    by_ark: dict[str, tuple[list[int], list[str]]] = {}  # ark -> (entries, offsets)
    for i, loc in enumerate(locs):
        ark, _, off = loc.rpartition(":")
        if ark and off.isdigit() and not loc.endswith("|"):
            entries, offs = by_ark.setdefault(ark, ([], []))
            entries.append(i)
            offs.append(off)
    for ark, (entries, offs) in by_ark.items():
        ark_path = Path(ark)
        if not ark_path.is_file():
            raise FileNotFoundError(f"{path}: {keys[entries[0]]}: no such ark file: {ark}")
        blocks += _read_float_vectors(path, ark, _map_file(ark_path),
                                      np.array(entries, dtype=np.int64),
                                      np.array(offs, dtype=np.int64), keys)
    done = np.zeros(len(keys), dtype=bool)
    for idx, _ in blocks:
        done[idx] = True
    # anything else (double vectors, matrices, compressed data, pipes): kaldiio, one by one
    for i in np.flatnonzero(~done).tolist():
        try:
            row = np.asarray(kaldiio.load_mat(locs[i]), dtype=np.float32).reshape(-1)
        except Exception as e:  # kaldiio raises many types on bad data
            raise ValueError(f"{path}: {keys[i]}: cannot read {locs[i]}: {e}") from None
        blocks.append((np.array([i]), row[None, :]))
    dims = {b.shape[1] for _, b in blocks}
    if len(dims) > 1:
        raise ValueError(f"{path}: embeddings of different sizes: {sorted(dims)}")
    if len(blocks) == 1 and len(blocks[0][0]) == len(keys):  # one ark, in scp order
        return keys, np.ascontiguousarray(blocks[0][1], dtype=np.float32)
    out = np.empty((len(keys), dims.pop()), dtype=np.float32)
    for idx, block in blocks:
        out[idx] = block
    return keys, out


def _map_file(path: Path) -> mmap.mmap | bytes:
    """A file's bytes, memory-mapped read-only: the page cache is read in place, not copied.

    The map closes when the last array made from it is gone.
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""  # mmap refuses an empty file
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _read_float_vectors(scp: Path, ark: str, data: bytes | mmap.mmap, entries: np.ndarray,
                        offs: np.ndarray, keys: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The binary float32 vectors at ``offs`` of one ark: ``[(entries, (n, dim) block)]``.

    Vectorised: the headers of all entries are checked at once and the vectors
    of one size and byte alignment are gathered in one fancy index over a
    sliding-window view of the ark. Entries of another type are left
    out (for kaldiio). An offset or a vector past the end of the ark is an error.
    """
    past = np.flatnonzero(offs + 10 > len(data))
    if past.size:
        i = int(entries[past[0]])
        raise ValueError(f"{scp}: {keys[i]}: offset {offs[past[0]]} is past the end of {ark} "
                         f"({len(data)} bytes): a truncated or overwritten ark")
    buf = np.frombuffer(data, dtype=np.uint8)
    head = buf[offs[:, None] + np.arange(10)]
    is_fv = (head[:, :6] == np.frombuffer(_FV_HEAD, dtype=np.uint8)).all(axis=1)
    dims = np.ascontiguousarray(head[:, 6:]).view("<i4").reshape(-1).astype(np.int64)
    ends = offs + 10 + 4 * dims
    bad = np.flatnonzero(is_fv & ((dims < 0) | (ends > len(data))))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"{scp}: {keys[entries[j]]}: vector of {dims[j]} floats at byte "
                         f"{offs[j]} runs past the end of {ark} ({len(data)} bytes): a "
                         "truncated ark")
    starts = offs + 10
    found = []
    for dim in np.unique(dims[is_fv]):
        for align in range(4):
            sel = np.flatnonzero(is_fv & (dims == dim) & (starts % 4 == align))
            if not sel.size:
                continue
            if dim == 0:
                block = np.zeros((sel.size, 0), dtype=np.float32)
            else:
                floats = np.frombuffer(data, dtype="<f4", offset=align,
                                       count=(len(data) - align) // 4)
                windows = np.lib.stride_tricks.sliding_window_view(floats, int(dim))
                block = windows[(starts[sel] - align) // 4]
            found.append((entries[sel], block))
    return found


EmbeddingSource = EmbeddingTable | Mapping[str, np.ndarray] | str | os.PathLike | Sequence[str]


def load_embeddings(source: EmbeddingSource) -> EmbeddingTable:
    """An :class:`EmbeddingTable` from a table, a dict, or one or more ``xvector.scp`` paths."""
    if isinstance(source, EmbeddingTable):
        return source
    if isinstance(source, Mapping):
        return EmbeddingTable.from_dict(source)
    return EmbeddingTable.from_scp(source)


def load_mean_vec(path: str | os.PathLike | None, dim: int | None = None) -> np.ndarray | None:
    """Read ``mean_vec.npy`` (shape ``(D,)``); ``None`` passes through.

    Anything but a finite 1-D float vector of ``dim`` entries is a ``ValueError``
    naming the file (a ``(4, 4)`` array is not flattened into 16 entries).
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such mean vector file: {path}")
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    if raw.ndim != 1:
        raise ValueError(f"{path}: a mean vector must be 1-D (D,), got shape {raw.shape}")
    try:
        vec = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: a mean vector must hold numbers, got {raw.dtype}") from None
    if dim is not None and vec.shape[0] != dim:
        raise ValueError(f"{path}: mean vector has dim {vec.shape[0]}, embeddings have {dim}")
    check_finite(vec, "mean vector", str(path))
    return vec
