"""Score files through Apache Arrow's multi-threaded CSV reader and writer.

A fast path for the large score files of AS-norm (600k+ trials): the file is
parsed by ``pyarrow.csv`` (C++, several threads), keys are found with
``pyarrow.compute.index_in`` (a hash look-up in C++) and the output is written
by ``pyarrow.csv.write_csv`` with scores formatted as ``%.6f`` through a
decimal cast. Output is byte-identical to :func:`~wespeaker_lap.scoring.score.write_scores`.

Only a plain file takes this path: single spaces between fields, 3 or 4 fields
on every line, finite scores, known labels, every key in the embedding table.
Anything else (tabs, a bad line, an unknown key, no pyarrow installed) returns
``None`` and the caller uses the Python reader, which names the file and line
of the problem or applies ``allow_missing``. So this path never accepts a file
that the Python reader would reject, and never changes a result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wespeaker_lap.io.files import BOM_BYTES, atomic_path

try:  # an optional speed-up: everything works without it
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
except ImportError:  # pragma: no cover - pyarrow is in the package's dependencies
    pa = None

_LABELS = ("target", "nontarget", "1", "0")
_TARGET = ("target", "1")
#: Beyond this magnitude the decimal cast is not used (``%.6f`` of it needs > 38 digits).
_MAX_DECIMAL = 1e15


@dataclass
class ScoreColumns:
    """A score file held as Arrow arrays: keys and labels stay out of Python lists."""

    enroll: object  # pyarrow.Array of str
    test: object
    scores: np.ndarray  # (T,) float64
    labels: object | None  # pyarrow.Array of str, or None for 3-field files
    source: str


def _first_line_fields(path: Path) -> int | None:
    """Fields of the first non-blank line split on single spaces; ``None`` if not plain."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(BOM_BYTES):
        return None
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.strip():
            fields = line.split(b" ")
            return len(fields) if all(fields) and b"\t" not in line else None
    return None


def read_score_columns(path: str | os.PathLike) -> ScoreColumns | None:
    """A plain ``enroll test score [label]`` file as :class:`ScoreColumns`, else ``None``."""
    if pa is None:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    ncol = _first_line_fields(path)
    if ncol not in (3, 4):
        return None
    names = ["enroll", "test", "score", "label"][:ncol]
    types = {"enroll": pa.string(), "test": pa.string(), "score": pa.float64(),
             "label": pa.string()}
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, block_size=8 << 20),
            parse_options=pcsv.ParseOptions(delimiter=" ", quote_char=False,
                                            double_quote=False, escape_char=False,
                                            newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        return None  # a bad line, another whitespace, not UTF-8: the Python reader says where
    if table.num_rows == 0:
        return None
    score = table.column("score")
    if score.null_count:
        return None
    scores = score.to_numpy()
    if not np.isfinite(scores).all():
        return None
    # keys are checked by the caller's look-up: one with whitespace (which the Python
    # reader would split) or an empty one is in no embedding table
    enroll = table.column("enroll").combine_chunks()
    test = table.column("test").combine_chunks()
    labels = None
    if ncol == 4:
        labels = table.column("label").combine_chunks()
        if not pc.all(pc.is_in(labels, value_set=pa.array(_LABELS))).as_py():
            return None
    return ScoreColumns(enroll, test, scores, labels, str(path))


def lookup(keys: object, table_keys: object) -> np.ndarray | None:
    """Row of each key in ``table_keys`` (a ``pyarrow.Array``); ``None`` if any is missing."""
    idx = pc.index_in(keys, value_set=table_keys)
    if idx.null_count:
        return None
    return idx.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def format_scores(scores: np.ndarray) -> object:
    """``%.6f`` of each score as a ``pyarrow`` string array (``-0.000000`` kept)."""
    text = pc.cast(pc.cast(pa.array(scores), pa.decimal128(38, 6), safe=False), pa.string())
    # the decimal drops the sign of a negative score that rounds to zero: look only at
    # the few candidates, not at every string
    near = np.flatnonzero(np.signbit(scores) & (np.abs(scores) < 1e-6))
    if near.size:
        fix = np.zeros(len(scores), dtype=bool)
        fix[near] = np.array(text.take(pa.array(near)).to_pylist()) == "0.000000"
        text = pc.if_else(pa.array(fix), "-0.000000", text)
    return text


def write_score_columns(path: str | os.PathLike, cols: ScoreColumns, scores: np.ndarray) -> bool:
    """Write ``enroll test score [target|nontarget]`` atomically; ``False`` if not possible.

    Labels ``1``/``0`` are written as ``target``/``nontarget``, as the Python
    writer does. Scores too large for the decimal cast return ``False``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(cols.enroll),):
        raise ValueError(f"{len(scores)} scores for {len(cols.enroll)} trials")
    if not np.isfinite(scores).all() or np.abs(scores).max() >= _MAX_DECIMAL:
        return False
    columns = [cols.enroll, cols.test, format_scores(scores)]
    names = ["enroll", "test", "score"]
    if cols.labels is not None:
        target = pc.is_in(cols.labels, value_set=pa.array(_TARGET))
        columns.append(pc.if_else(target, "target", "nontarget"))
        names.append("label")
    out = pa.table(columns, names=names)
    with atomic_path(path) as tmp:
        pcsv.write_csv(out, tmp, write_options=pcsv.WriteOptions(
            include_header=False, delimiter=" ", quoting_style="none"))
    return True
