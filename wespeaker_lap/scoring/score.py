"""Trial lists, embedding tables and mean-subtracted cosine scoring.

Conventions (Kaldi's and WeSpeaker's):

* Trials in Kaldi format: ``enroll test target|nontarget`` (or unlabeled
  ``enroll test``); the official VoxCeleb format: ``1|0 enroll test``.
* Score files: ``enroll test score [target|nontarget]``.
* Cosine scoring subtracts a mean embedding (``mean_vec.npy``, usually the mean
  training embedding) from both sides, then L2-normalises.

All the math is vectorised: the embeddings are gathered into matrices and the
trial scores are row-wise dot products. Python loops only map keys to rows.

>>> import numpy as np
>>> emb = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 1.0])}
>>> trials = Trials(["a"], ["b"], np.array([1], dtype=np.int8))
>>> kept, scores = cosine_score(emb, trials)
>>> round(float(scores[0]), 4)
0.7071
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wespeaker_lap.io.files import BOM_BYTES, atomic_write, not_a_file, strip_bom
from wespeaker_lap.io.xvectors import (
    EmbeddingSource,
    EmbeddingTable,
    check_finite,
    load_embeddings,
    load_mean_vec,
)

logger = logging.getLogger(__name__)

TRIAL_FORMATS = ("auto", "kaldi", "voxceleb")
KALDI_LABELS = {"target": 1, "nontarget": 0}
VOXCELEB_LABELS = {"1": 1, "0": 0}
LABEL_NAMES = ("nontarget", "target")
# Score files are written by us with Kaldi labels; 1/0 is accepted too.
SCORE_LABELS = {**KALDI_LABELS, **VOXCELEB_LABELS}
_SHOW_MISSING = 5


class MissingEmbeddingError(KeyError):
    """A trial names an utterance that has no embedding."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# ---------------------------------------------------------------------------
# trials and score files


@dataclass
class Trials:
    """A list of trials: parallel enroll/test keys and optional labels.

    ``labels`` is an int8 array of 1 (target) / 0 (nontarget), or ``None`` for
    an unlabeled list. ``source`` names the file for error messages.
    """

    enroll: list[str]
    test: list[str]
    labels: np.ndarray | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.enroll) != len(self.test):
            raise ValueError(
                f"{self.source}: {len(self.enroll)} enroll keys but {len(self.test)} test keys"
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int8)
            if self.labels.shape != (len(self.enroll),):
                raise ValueError(
                    f"{self.source}: labels of shape {self.labels.shape} for "
                    f"{len(self.enroll)} trials"
                )

    def __len__(self) -> int:
        return len(self.enroll)

    def subset(self, mask: np.ndarray) -> Trials:
        """The trials where the boolean ``mask`` is true, in order."""
        idx = np.flatnonzero(mask)
        return Trials(
            [self.enroll[i] for i in idx],
            [self.test[i] for i in idx],
            None if self.labels is None else self.labels[idx],
            self.source,
        )


@dataclass
class _Columns:
    """A whitespace-separated table whose non-blank lines all have ``ncol`` fields."""

    path: Path
    ncol: int
    tokens: list[str]  # row-major, len == ncol * rows
    lines: np.ndarray  # (rows,) line number of each row

    def __len__(self) -> int:
        return len(self.lines)

    def col(self, i: int) -> list[str]:
        return self.tokens[i :: self.ncol]

    def row_text(self, row: int) -> str:
        return " ".join(self.tokens[row * self.ncol : (row + 1) * self.ncol])


def _read_columns(path: Path, what: str) -> _Columns:
    """Read a table, checking that every non-blank line has the first line's field count.

    Vectorised: one ``str.split`` of the whole file, and the per-line field
    counts from the byte positions of token starts and newlines (files with
    unusual whitespace take a slower per-line path). A line with another field
    count is a ``ValueError`` naming file and line.
    """
    why = not_a_file(path, what)
    if why is not None:
        if why.startswith("no such"):
            raise FileNotFoundError(why)
        raise ValueError(why)
    raw = path.read_bytes()
    if raw.startswith(BOM_BYTES):
        strip_bom(BOM_BYTES.decode("utf-8"), path)  # the warning
        raw = raw[len(BOM_BYTES):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); "
                         f"is it a {what}?") from None
    tokens = text.split()
    if not tokens:
        return _Columns(path, 0, [], np.zeros(0, dtype=np.int64))
    b = np.frombuffer(raw, dtype=np.uint8)
    ws = b <= 32
    start = ~ws
    start[1:] &= ws[:-1]
    starts = np.flatnonzero(start)
    if starts.size == len(tokens):
        line_idx = np.searchsorted(np.flatnonzero(b == 10), starts)  # 0-based line of each token
        counts = np.bincount(line_idx)
        rows = np.flatnonzero(counts)
    else:  # whitespace that str.split and the byte scan disagree on: go line by line
        per_line = [len(line.split()) for line in text.split("\n")]
        counts = np.array(per_line)
        rows = np.flatnonzero(counts)
    ncol = int(counts[rows[0]])
    bad = rows[counts[rows] != ncol]
    if bad.size:
        n = int(bad[0])
        line = text.split("\n")[n].strip()
        raise ValueError(
            f"{path}:{n + 1}: expected {ncol} fields (as on line {rows[0] + 1}), "
            f"got {counts[n]}: {line!r}"
        )
    return _Columns(path, ncol, tokens, rows + 1)


def _labels(cols: _Columns, col: int, table: dict[str, int], expected: str) -> np.ndarray:
    """Map a label column through ``table``; an unknown label names file and line."""
    names = np.array(cols.col(col))
    labels = np.full(names.shape, -1, dtype=np.int8)
    for name, value in table.items():
        labels[names == name] = value
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{cols.path}:{cols.lines[i]}: unknown trial label {str(names[i])!r} "
            f"(expected {expected}): {cols.row_text(i)!r}"
        )
    return labels


def read_trials(path: str | os.PathLike, fmt: str = "auto") -> Trials:
    """Read a trial list in Kaldi or VoxCeleb format.

    ``fmt``: ``"auto"`` (detected from the first line of the file), ``"kaldi"``
    (``enroll test target|nontarget`` or unlabeled ``enroll test``) or
    ``"voxceleb"`` (``1|0 enroll test``). Every line must follow the file's
    format; an unknown label is a ``ValueError`` naming file and line. An empty
    list is an error.
    """
    if fmt not in TRIAL_FORMATS:
        raise ValueError(f"unknown trial format {fmt!r}; choose one of {TRIAL_FORMATS}")
    path = Path(path)
    cols = _read_columns(path, "trial list")
    if len(cols) == 0:
        raise ValueError(f"{path}: empty trial list")
    if cols.ncol == 2:
        if fmt == "voxceleb":
            raise ValueError(f"{path}:{cols.lines[0]}: VoxCeleb trials need '1|0 enroll test'")
        return Trials(cols.col(0), cols.col(1), None, str(path))
    if cols.ncol != 3:
        raise ValueError(
            f"{path}:{cols.lines[0]}: expected 2 or 3 fields in a trial line, got {cols.ncol}: "
            f"{cols.row_text(0)!r}"
        )
    first = cols.tokens[:3]
    if fmt == "auto":
        if first[2] in KALDI_LABELS:
            fmt = "kaldi"
        elif first[0] in VOXCELEB_LABELS:
            fmt = "voxceleb"
        else:
            raise ValueError(
                f"{path}:{cols.lines[0]}: unknown trial label: neither Kaldi 'enroll test "
                f"target|nontarget' nor VoxCeleb '1|0 enroll test': {cols.row_text(0)!r}"
            )
    if fmt == "kaldi":
        labels = _labels(cols, 2, KALDI_LABELS, "target or nontarget")
        return Trials(cols.col(0), cols.col(1), labels, str(path))
    labels = _labels(cols, 0, VOXCELEB_LABELS, "1 or 0 in the first column")
    return Trials(cols.col(1), cols.col(2), labels, str(path))


def duplicate_trials(trials: Trials) -> list[int]:
    """Indices of trials whose (enroll, test) pair came earlier in the list."""
    seen: set[tuple[str, str]] = set()
    dups = []
    for i, pair in enumerate(zip(trials.enroll, trials.test, strict=True)):
        if pair in seen:
            dups.append(i)
        else:
            seen.add(pair)
    return dups


def warn_duplicate_trials(trials: Trials) -> int:
    """Log one warning with the count of repeated (enroll, test) pairs; returns the count.

    WeSpeaker's ``score.py`` scores every line of a trial list, so the score file
    stays line for line with it; the repeats are kept, but said, and
    ``compute_metrics`` counts each pair once (:func:`unique_scores`).
    """
    dups = duplicate_trials(trials)
    if dups:
        i = dups[0]
        logger.warning("%s: %d repeated trial(s) (the same enroll and test), the first %s %s; "
                       "each is scored, and compute_metrics counts each pair once",
                       trials.source, len(dups), trials.enroll[i], trials.test[i])
    return len(dups)


def unique_scores(trials: Trials, scores: np.ndarray) -> tuple[Trials, np.ndarray]:
    """Keep the first line of each repeated (enroll, test) pair of a score file.

    Repeats that agree (same score, same label) are dropped with one warning
    giving the count; repeats that disagree are a ValueError naming the pair.
    """
    dups = duplicate_trials(trials)
    if not dups:
        return trials, scores
    first: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(zip(trials.enroll, trials.test, strict=True)):
        first.setdefault(pair, i)
    for i in dups:
        j = first[(trials.enroll[i], trials.test[i])]
        same_label = trials.labels is None or trials.labels[i] == trials.labels[j]
        if not same_label or abs(scores[i] - scores[j]) > 1e-6:
            raise ValueError(f"{trials.source}: the trial {trials.enroll[i]} {trials.test[i]} "
                             "appears twice with different scores or labels")
    logger.warning("%s: %d repeated trial line(s) (the same enroll and test) counted once",
                   trials.source, len(dups))
    keep = np.ones(len(trials), dtype=bool)
    keep[dups] = False
    return trials.subset(keep), scores[keep]


def write_scores(path: str | os.PathLike, trials: Trials, scores: np.ndarray) -> None:
    """Write ``enroll test score [target|nontarget]`` lines atomically."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ValueError(f"{len(scores)} scores for {len(trials)} trials")
    check_finite(scores, "scores", str(path))
    values = scores.tolist()
    if trials.labels is None:
        lines = [f"{e} {t} {s:.6f}\n" for e, t, s in zip(trials.enroll, trials.test, values,
                                                          strict=True)]
    else:
        names = [LABEL_NAMES[v] for v in trials.labels.tolist()]
        lines = [
            f"{e} {t} {s:.6f} {lab}\n"
            for e, t, s, lab in zip(trials.enroll, trials.test, values, names, strict=True)
        ]
    with atomic_write(path) as f:
        f.write("".join(lines))


def read_scores(path: str | os.PathLike, require_labels: bool = False) -> tuple[Trials, np.ndarray]:
    """Read a score file ``enroll test score [label]`` -> (trials, float64 scores).

    Labels may be ``target|nontarget`` or ``1|0``. Either every line has a label
    or none does. NaN or infinite scores, bad numbers, unknown labels and empty
    files are ``ValueError`` naming file and line.
    """
    path = Path(path)
    cols = _read_columns(path, "score file")
    if len(cols) == 0:
        raise ValueError(f"{path}: empty score file")
    if cols.ncol not in (3, 4):
        raise ValueError(
            f"{path}:{cols.lines[0]}: expected 'enroll test score [label]', got {cols.ncol} "
            f"fields: {cols.row_text(0)!r}"
        )
    if require_labels and cols.ncol == 3:
        raise ValueError(f"{path}:{cols.lines[0]}: score file has no target/nontarget labels")
    text = cols.col(2)
    try:
        scores = np.array(text, dtype=np.float64)
    except ValueError:
        for i, s in enumerate(text):
            try:
                float(s)
            except ValueError:
                raise ValueError(f"{path}:{cols.lines[i]}: bad score {s!r}") from None
        raise
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{path}:{cols.lines[i]}: non-finite score {text[i]!r} ({bad.size} such lines in all)"
        )
    labels = None
    if cols.ncol == 4:
        labels = _labels(cols, 3, SCORE_LABELS, "target, nontarget, 1 or 0")
    return Trials(cols.col(0), cols.col(1), labels, str(path)), scores


# ---------------------------------------------------------------------------
# embeddings


def normalize_rows(x: np.ndarray, mean_vec: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean_vec) / ||x - mean_vec||`` row-wise, float32: ``(N, D) -> (N, D)``."""
    x = np.asarray(x, dtype=np.float32)
    if mean_vec is not None:
        mean_vec = np.asarray(mean_vec, dtype=np.float32).reshape(-1)
        if mean_vec.shape[0] != x.shape[1]:
            raise ValueError(
                f"mean vector has dim {mean_vec.shape[0]}, embeddings have {x.shape[1]}"
            )
        x = x - mean_vec
    else:
        x = x.copy()
    # in place on one new array, norms in blocks of rows: a 50k x 256 table costs 51 MB
    # of fresh pages, not 150 (the same values as one np.linalg.norm over all rows)
    norms = np.empty((len(x), 1), dtype=np.float32)
    for s in range(0, len(x), 4096):
        norms[s : s + 4096] = np.linalg.norm(x[s : s + 4096], axis=1, keepdims=True)
    x /= np.maximum(norms, np.float32(1e-12))
    return x


# ---------------------------------------------------------------------------
# scoring


def resolve_trials(
    table: EmbeddingTable, trials: Trials, allow_missing: bool = False
) -> tuple[Trials, np.ndarray, np.ndarray, np.ndarray]:
    """Map trial keys to table rows -> (kept trials, enroll rows, test rows, kept mask).

    A trial naming an utterance without embedding raises
    :class:`MissingEmbeddingError` with the counts and the first few names; with
    ``allow_missing`` such trials are dropped and the count is logged. Dropping
    every trial is still an error.
    """
    if len(trials) == 0:
        raise ValueError(f"{trials.source}: empty trial list")
    idx_e, found_e = table.lookup(trials.enroll)
    idx_t, found_t = table.lookup(trials.test)
    ok = found_e & found_t
    if not ok.all():
        bad = np.flatnonzero(~ok)
        missing = sorted(
            {trials.enroll[i] for i in bad if not found_e[i]}
            | {trials.test[i] for i in bad if not found_t[i]}
        )
        msg = (
            f"{trials.source}: {bad.size} of {len(trials)} trials name utterances with no "
            f"embedding in {table.source} ({len(missing)} utterances missing; first: "
            f"{', '.join(missing[:_SHOW_MISSING])})"
        )
        if not allow_missing:
            raise MissingEmbeddingError(msg + "; pass --allow-missing to skip those trials")
        if bad.size == len(trials):
            raise MissingEmbeddingError(msg + "; no trial left to score")
        logger.warning("%s; skipping them", msg)
        trials = trials.subset(ok)
        idx_e, idx_t = idx_e[ok], idx_t[ok]
    return trials, idx_e, idx_t, ok


def rowwise_dot(
    a: np.ndarray, b: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, chunk: int = 65536
) -> np.ndarray:
    """``out[i] = a[idx_a[i]] . b[idx_b[i]]`` in chunks (bounded memory), float64 out."""
    out = np.empty(len(idx_a), dtype=np.float64)
    for s in range(0, len(idx_a), chunk):
        ea = a[idx_a[s : s + chunk]]
        eb = b[idx_b[s : s + chunk]]
        out[s : s + chunk] = np.einsum("ij,ij->i", ea, eb)
    return out


def cosine_score(
    embeddings: EmbeddingSource,
    trials: Trials,
    mean_vec: np.ndarray | None = None,
    allow_missing: bool = False,
) -> tuple[Trials, np.ndarray]:
    """Mean-subtracted cosine scores of ``trials`` -> (kept trials, float64 scores).

    ``embeddings``: dict key -> (D,) array, an :class:`EmbeddingTable`, or
    ``xvector.scp`` path(s). ``mean_vec``: (D,) subtracted from every embedding
    before L2 normalisation, or ``None``.
    """
    table = load_embeddings(embeddings)
    trials, idx_e, idx_t, _ = resolve_trials(table, trials, allow_missing)
    used = np.unique(np.concatenate([idx_e, idx_t]))
    zero = used[~np.any(table.matrix[used] != 0, axis=1)]
    if zero.size:  # its cosine with anything is 0: a score that means nothing
        raise ValueError(f"{table.source}: the embedding of {table.keys[int(zero[0])]!r} is all "
                         f"zeros ({zero.size} such in the trials); re-extract it")
    # normalise only the rows the trials use; remap trial rows into that subset
    normed = normalize_rows(table.matrix[used], mean_vec)
    remap = np.full(len(table), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    scores = rowwise_dot(normed, normed, remap[idx_e], remap[idx_t])
    check_finite(scores, "scores", trials.source)
    return trials, scores


def score_output_paths(trial_paths: Sequence[str | os.PathLike],
                       output_dir: str | os.PathLike) -> list[Path]:
    """``output_dir/<trial file name>.score`` for each trial file: the one home of these names.

    Two trial files with the same base name would write the same score file: that
    is an error naming both, before anything is scored.

    >>> [p.as_posix() for p in score_output_paths(["a/vox1_O.kaldi"], "exp/scores")]
    ['exp/scores/vox1_O.kaldi.score']
    """
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; give a directory")
    outs: dict[Path, str] = {}
    for tp in trial_paths:
        out = Path(output_dir) / (Path(tp).name + ".score")
        if out in outs:
            raise ValueError(f"trial files {outs[out]} and {tp} have the same base name and "
                             f"would both write {out}; rename one or score them apart")
        outs[out] = os.fspath(tp)
    return list(outs)


def score_files(
    embeddings: EmbeddingSource,
    trial_paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    mean_vec: np.ndarray | str | os.PathLike | None = None,
    trial_format: str = "auto",
    allow_missing: bool = False,
) -> list[Path]:
    """Score each trial file into ``output_dir/<trial file name>.score``; returns the paths.

    The embeddings are loaded once for all trial files (WeSpeaker's ``score.py``).
    """
    outs = score_output_paths(trial_paths, output_dir)
    table = load_embeddings(embeddings)
    if mean_vec is not None and not isinstance(mean_vec, np.ndarray):
        mean_vec = load_mean_vec(mean_vec, table.dim)
    for tp, out in zip(trial_paths, outs, strict=True):
        trials = read_trials(tp, trial_format)
        warn_duplicate_trials(trials)
        kept, scores = cosine_score(table, trials, mean_vec, allow_missing)
        write_scores(out, kept, scores)
        logger.info("scored %d trials of %s -> %s", len(kept), tp, out)
    return outs
