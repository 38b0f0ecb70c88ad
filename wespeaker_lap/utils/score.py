"""Trial lists, embedding tables and mean-subtracted cosine scoring.

Conventions (see ``/work/shared/ANCHORS.md``):

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wespeaker_lap.utils.fileio import atomic_write

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


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines as (line number, fields)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8") as f:
        rows = [(n, line.split()) for n, line in enumerate(f, 1)]
    return [(n, fields) for n, fields in rows if fields]


def _detect_trial_format(path: Path, lineno: int, fields: list[str]) -> str:
    if len(fields) == 2:
        return "unlabeled"
    if len(fields) == 3:
        if fields[2] in KALDI_LABELS:
            return "kaldi"
        if fields[0] in VOXCELEB_LABELS:
            return "voxceleb"
        raise ValueError(
            f"{path}:{lineno}: unknown trial label: neither Kaldi "
            f"'enroll test target|nontarget' nor VoxCeleb '1|0 enroll test': {' '.join(fields)!r}"
        )
    raise ValueError(
        f"{path}:{lineno}: expected 2 or 3 fields in a trial line, got {len(fields)}: "
        f"{' '.join(fields)!r}"
    )


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
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: empty trial list")
    first_no, first = rows[0]
    detected = _detect_trial_format(path, first_no, first)
    if fmt == "auto":
        fmt = detected
    elif fmt == "kaldi" and detected == "unlabeled":
        fmt = "unlabeled"
    ncol = 2 if fmt == "unlabeled" else 3
    for n, fields in rows:
        if len(fields) != ncol:
            raise ValueError(
                f"{path}:{n}: expected {ncol} fields ({fmt} trials, as on line {first_no}), "
                f"got {len(fields)}: {' '.join(fields)!r}"
            )
    if fmt == "unlabeled":
        enroll, test = (list(c) for c in zip(*(f for _, f in rows), strict=True))
        return Trials(enroll, test, None, str(path))
    if fmt == "kaldi":
        enroll_col, test_col, label_col, table = 0, 1, 2, KALDI_LABELS
    else:
        label_col, enroll_col, test_col, table = 0, 1, 2, VOXCELEB_LABELS
    labels = np.empty(len(rows), dtype=np.int8)
    for i, (n, fields) in enumerate(rows):
        lab = table.get(fields[label_col])
        if lab is None:
            raise ValueError(
                f"{path}:{n}: unknown trial label {fields[label_col]!r} for {fmt} trials "
                f"(expected one of {sorted(table)})"
            )
        labels[i] = lab
    enroll = [f[enroll_col] for _, f in rows]
    test = [f[test_col] for _, f in rows]
    return Trials(enroll, test, labels, str(path))


def write_scores(path: str | os.PathLike, trials: Trials, scores: np.ndarray) -> None:
    """Write ``enroll test score [target|nontarget]`` lines atomically."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ValueError(f"{len(scores)} scores for {len(trials)} trials")
    check_finite(scores, "scores", str(path))
    text = np.char.mod("%.6f", scores)
    with atomic_write(path) as f:
        if trials.labels is None:
            for e, t, s in zip(trials.enroll, trials.test, text, strict=True):
                f.write(f"{e} {t} {s}\n")
        else:
            names = [LABEL_NAMES[int(v)] for v in trials.labels]
            for e, t, s, lab in zip(trials.enroll, trials.test, text, names, strict=True):
                f.write(f"{e} {t} {s} {lab}\n")


def read_scores(path: str | os.PathLike, require_labels: bool = False) -> tuple[Trials, np.ndarray]:
    """Read a score file ``enroll test score [label]`` -> (trials, float64 scores).

    Labels may be ``target|nontarget`` or ``1|0``. Either every line has a label
    or none does. NaN or infinite scores, bad numbers, unknown labels and empty
    files are ``ValueError`` naming file and line.
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: empty score file")
    first_no, first = rows[0]
    ncol = len(first)
    if ncol not in (3, 4):
        raise ValueError(
            f"{path}:{first_no}: expected 'enroll test score [label]', got {len(first)} fields"
        )
    if require_labels and ncol == 3:
        raise ValueError(f"{path}:{first_no}: score file has no target/nontarget labels")
    for n, fields in rows:
        if len(fields) != ncol:
            raise ValueError(
                f"{path}:{n}: expected {ncol} fields (as on line {first_no}), "
                f"got {len(fields)}: {' '.join(fields)!r}"
            )
    cols = list(zip(*(f for _, f in rows), strict=True))
    try:
        scores = np.array(cols[2], dtype=np.float64)
    except ValueError:
        for n, fields in rows:
            try:
                float(fields[2])
            except ValueError:
                raise ValueError(f"{path}:{n}: bad score {fields[2]!r}") from None
        raise
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        n = rows[bad[0]][0]
        raise ValueError(
            f"{path}:{n}: non-finite score {cols[2][bad[0]]!r} ({bad.size} such lines in all)"
        )
    labels = None
    if ncol == 4:
        labels = np.empty(len(rows), dtype=np.int8)
        for i, (n, fields) in enumerate(rows):
            lab = SCORE_LABELS.get(fields[3])
            if lab is None:
                raise ValueError(
                    f"{path}:{n}: unknown trial label {fields[3]!r} "
                    f"(expected target, nontarget, 1 or 0)"
                )
            labels[i] = lab
    return Trials(list(cols[0]), list(cols[1]), labels, str(path)), scores


# ---------------------------------------------------------------------------
# embeddings


def check_finite(x: np.ndarray, what: str, source: str, keys: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf, naming the first bad rows."""
    finite = np.isfinite(x)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1)) if x.ndim else [0]
    shown = [keys[i] for i in bad_rows[:_SHOW_MISSING]] if keys is not None else list(
        bad_rows[:_SHOW_MISSING]
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
        """Read one or more Kaldi vector scp files (``xvector.scp``) with kaldiio."""
        import kaldiio

        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        keys: list[str] = []
        rows: list[np.ndarray] = []
        names = []
        for p in paths:
            p = Path(p)
            if not p.is_file():
                raise FileNotFoundError(f"no such embedding scp: {p}")
            names.append(str(p))
            for key, vec in kaldiio.load_scp_sequential(str(p)):
                keys.append(key)
                rows.append(np.asarray(vec, dtype=np.float32).reshape(-1))
        source = "+".join(names)
        if not rows:
            raise ValueError(f"{source}: no embeddings")
        try:
            matrix = np.stack(rows)
        except ValueError as e:
            raise ValueError(f"{source}: embeddings of different sizes: {e}") from None
        return cls(keys, matrix, source)

    def rows(
        self, keys: Sequence[str], what: str = "keys", source: str | None = None
    ) -> np.ndarray:
        """Row indices of ``keys``; a missing key raises :class:`MissingEmbeddingError`."""
        idx, found = self.lookup(keys)
        if not found.all():
            missing = sorted({keys[i] for i in np.flatnonzero(~found)})
            raise MissingEmbeddingError(
                f"{source or self.source}: {len(missing)} {what} have no embedding in "
                f"{self.source}; first: {', '.join(missing[:_SHOW_MISSING])}"
            )
        return idx

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row indices with -1 where missing, boolean found mask)."""
        get = self.index.get
        idx = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        return idx, idx >= 0


EmbeddingSource = EmbeddingTable | Mapping[str, np.ndarray] | str | os.PathLike | Sequence[str]


def load_embeddings(source: EmbeddingSource) -> EmbeddingTable:
    """An :class:`EmbeddingTable` from a table, a dict, or one or more ``xvector.scp`` paths."""
    if isinstance(source, EmbeddingTable):
        return source
    if isinstance(source, Mapping):
        return EmbeddingTable.from_dict(source)
    return EmbeddingTable.from_scp(source)


def load_mean_vec(path: str | os.PathLike | None, dim: int | None = None) -> np.ndarray | None:
    """Read ``mean_vec.npy`` (shape ``(D,)``); ``None`` passes through. Checks dim and NaN."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such mean vector file: {path}")
    vec = np.asarray(np.load(path), dtype=np.float32).reshape(-1)
    if dim is not None and vec.shape[0] != dim:
        raise ValueError(f"{path}: mean vector has dim {vec.shape[0]}, embeddings have {dim}")
    check_finite(vec, "mean vector", str(path))
    return vec


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
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


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
    # normalise only the rows the trials use; remap trial rows into that subset
    normed = normalize_rows(table.matrix[used], mean_vec)
    remap = np.full(len(table), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    scores = rowwise_dot(normed, normed, remap[idx_e], remap[idx_t])
    check_finite(scores, "scores", trials.source)
    return trials, scores


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
    table = load_embeddings(embeddings)
    if mean_vec is not None and not isinstance(mean_vec, np.ndarray):
        mean_vec = load_mean_vec(mean_vec, table.dim)
    outs = []
    for tp in trial_paths:
        trials = read_trials(tp, trial_format)
        kept, scores = cosine_score(table, trials, mean_vec, allow_missing)
        out = Path(output_dir) / (Path(tp).name + ".score")
        write_scores(out, kept, scores)
        logger.info("scored %d trials of %s -> %s", len(kept), tp, out)
        outs.append(out)
    return outs
