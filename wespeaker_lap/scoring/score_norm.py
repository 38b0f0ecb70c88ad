"""Score normalisation against a cohort: AS-norm (top-N) and S-norm (all cohort).

For a trial (e, t) with raw score s, each side's statistics come from its
cosine scores against the cohort (mean-subtracted, L2-normalised like the
trials): ``mu_x, sd_x`` = mean and (population) std of the top-N cohort scores
of x (all of them for S-norm). The normalised score is

    0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)

Vectorised: the statistics are computed once per utterance from an
``(utterances, cohort)`` score matrix, built in chunks of rows so that 50k
utterances x 6k cohort never sit in memory at once; the top-N is exact, found
through a sampled threshold (:func:`top_k_stats`), one thread per CPU. The
trials then only gather per-utterance statistics. :func:`normalize_score_files`
computes the statistics of every evaluation embedding (as WeSpeaker's
``score_norm.py`` does) in a background thread while it looks up the trials, and
reads and writes plain score files through Arrow
(:mod:`~wespeaker_lap.scoring.arrow_scores`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> emb = {f"u{i}": rng.normal(size=8) for i in range(4)}
>>> cohort = build_cohort(rng.normal(size=(20, 8)))
>>> trials = Trials(["u0", "u1"], ["u2", "u3"])
>>> kept, normed = normalize_scores(trials, np.array([0.5, 0.1]), emb, cohort, top_n=5)
>>> normed.shape
(2,)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from wespeaker_lap.io.files import read_scp
from wespeaker_lap.io.xvectors import (
    EmbeddingSource,
    EmbeddingTable,
    check_finite,
    load_embeddings,
    load_mean_vec,
)
from wespeaker_lap.scoring import arrow_scores
from wespeaker_lap.scoring.score import (
    MissingEmbeddingError,
    Trials,
    normalize_rows,
    read_scores,
    resolve_trials,
    write_scores,
)

logger = logging.getLogger(__name__)

# method name -> whether it uses only the top-N cohort scores
NORM_METHODS = {"asnorm": True, "snorm": False}
_MIN_STD = 1e-8
#: AS-norm's top-N cohort scores per side when a caller names none (WeSpeaker's
#: VoxCeleb recipes use 300): every function, CLI and tool takes its default from here.
DEFAULT_TOP_N = 300
#: Rows scored against the cohort at a time, per thread (every entry point's default:
#: 2,048 cost this VM three times the kernel time in fresh pages).
CHUNK_ROWS = 256


def build_cohort(
    embeddings: EmbeddingSource | np.ndarray,
    mean_vec: np.ndarray | None = None,
    utt2spk: Mapping[str, str] | str | os.PathLike | None = None,
    allow_missing: bool = False,
) -> np.ndarray:
    """Cohort matrix ``(C, D)``: mean-subtracted, L2-normalised, float32.

    ``embeddings``: utterance embeddings (dict, table, scp path(s)) or a raw
    ``(C, D)`` array. With ``utt2spk`` (dict or file) the cohort is one
    speaker-mean per speaker: the mean of the speaker's mean-subtracted
    utterance embeddings (as WeSpeaker's ``vector_mean.py`` followed by mean
    subtraction), then normalised. Only the utterances listed in ``utt2spk``
    are used; one without an embedding is an error unless ``allow_missing``.
    """
    if isinstance(embeddings, np.ndarray):
        if utt2spk is not None:
            raise ValueError("utt2spk needs keyed embeddings (dict, table or scp), not an array")
        check_finite(embeddings, "cohort embeddings", "<array>")
        return normalize_rows(embeddings, mean_vec)
    table = load_embeddings(embeddings)
    if utt2spk is None:
        return normalize_rows(table.matrix, mean_vec)
    source = "<utt2spk>"
    if not isinstance(utt2spk, Mapping):
        source = str(utt2spk)
        utt2spk = read_scp(utt2spk)
    utts = list(utt2spk)
    if not utts:
        raise ValueError(f"{source}: empty utt2spk")
    idx, found = table.lookup(utts)
    if not found.all():
        missing = [utts[i] for i in np.flatnonzero(~found)]
        msg = (
            f"{source}: {len(missing)} of {len(utts)} cohort utterances have no embedding in "
            f"{table.source}; first: {', '.join(missing[:5])}"
        )
        if not allow_missing or len(missing) == len(utts):
            raise MissingEmbeddingError(msg)
        logger.warning("%s; skipping them", msg)
        utts = [u for u, f in zip(utts, found, strict=True) if f]
        idx = idx[found]
    _, spk_index = np.unique([utt2spk[u] for u in utts], return_inverse=True)
    x = table.matrix[idx].astype(np.float64)
    if mean_vec is not None:
        x -= np.asarray(mean_vec, dtype=np.float64).reshape(1, -1)
    # per-speaker sums by sorting rows by speaker and reducing each run
    order = np.argsort(spk_index, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(spk_index[order]) != 0])
    sums = np.add.reduceat(x[order], starts, axis=0)
    counts = np.diff(np.r_[starts, len(order)])
    spk_means = sums / counts[:, None]
    logger.info("cohort: %d speaker means from %d utterances", len(spk_means), len(utts))
    return normalize_rows(spk_means)


def _cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_top_n(top_n: int | None, cohort_size: int) -> None:
    """Refuse a ``top_n`` larger than the cohort: AS-norm would then use the whole cohort
    (S-norm) under a name, ``asnorm<top_n>``, that says otherwise."""
    if top_n is not None and top_n > cohort_size:
        raise ValueError(
            f"AS-norm top_n {top_n} is larger than the cohort ({cohort_size} entries): it would "
            f"use all {cohort_size} under a name that says top {top_n}; give --top_n "
            f"{cohort_size} or fewer, or --method snorm for the whole cohort")


def cohort_stats(
    emb: np.ndarray,
    cohort: np.ndarray,
    top_n: int | None = DEFAULT_TOP_N,
    chunk_size: int = CHUNK_ROWS,
    workers: int | None = None,
    normalize: bool = False,
    mean_vec: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row's top-N cohort scores: ``(U, D), (C, D) -> (U,), (U,)``.

    ``cohort`` must already be mean-subtracted and L2-normalised
    (:func:`build_cohort`); so must ``emb``, unless ``normalize``: then each
    chunk of raw rows is normalised (minus ``mean_vec``) by the thread that
    scores it, which gives the values of :func:`normalize_rows` over all rows
    without a second copy of the table. ``top_n=None`` (or ``>= C``) uses
    the whole cohort (S-norm). The std is the population std (ddof 0).

    Rows go in chunks of ``chunk_size`` to ``workers`` threads (default: one per
    CPU); each thread multiplies its chunk by the cohort with a one-thread BLAS
    and selects the top-N with :func:`top_k_stats` (``np.partition`` releases the
    GIL, so the selection, single-threaded in numpy, uses every core too). Memory:
    one ``(chunk_size, C)`` float32 block per thread, and the selection's
    temporaries of the same order.

    Chunking changes the statistics only within float32 rounding (about 1e-7
    relative), not bit for bit: BLAS may run another kernel for a 7-row block
    than for a 256-row one (OpenBLAS's Haswell kernels do), and the kernels sum
    the products in different orders. For one ``chunk_size`` the result does not
    depend on ``workers``: each row's scores come from the same block shape.
    """
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    cohort = np.asarray(cohort, dtype=np.float32)
    if emb.ndim != 2 or cohort.ndim != 2 or emb.shape[1] != cohort.shape[1]:
        raise ValueError(f"embeddings {emb.shape} and cohort {cohort.shape} differ in shape")
    n_coh = cohort.shape[0]
    if n_coh < 2:
        raise ValueError(f"the cohort needs at least 2 embeddings, got {n_coh}")
    if top_n is not None and top_n < 2:
        raise ValueError(f"top_n must be at least 2 (the std of one score is 0), got {top_n}")
    check_top_n(top_n, n_coh)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    k = n_coh if top_n is None else min(top_n, n_coh)
    coh_t = np.ascontiguousarray(cohort.T)  # (D, C)
    n = emb.shape[0]
    mean = np.empty(n, dtype=np.float64)
    std = np.empty(n, dtype=np.float64)

    local = threading.local()  # one block per thread, reused: no page faults per chunk

    def one_chunk(s: int) -> None:
        if not hasattr(local, "buf"):
            local.buf = np.empty((min(chunk_size, n), n_coh), dtype=np.float32)
        block = local.buf[: min(chunk_size, n - s)]
        rows = emb[s : s + chunk_size]
        if normalize:
            rows = normalize_rows(rows, mean_vec)
        np.matmul(rows, coh_t, out=block)
        mean[s : s + len(block)], std[s : s + len(block)] = top_k_stats(block, k)

    starts = range(0, n, chunk_size)
    workers = min(_cpu_count() if workers is None else max(1, workers), len(starts))
    if workers <= 1:
        for s in starts:
            one_chunk(s)
    else:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as ex:
            list(ex.map(one_chunk, starts))
    return mean, std


#: Sampling step and margin of :func:`top_k_stats`' candidate threshold.
_SAMPLE_STEP = 8
_SAMPLE_MARGIN = 20


def _partition_stats(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row's ``k`` largest values by a full ``np.partition`` (in place)."""
    n = block.shape[1]
    if k < n:
        block.partition(n - k, axis=1)  # the k largest now sit in the last k columns
    top = block[:, n - k :].astype(np.float64)
    return top.mean(axis=1), top.std(axis=1)


def top_k_stats(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of the ``k`` largest values of each row: ``(R, C) -> (R,), (R,)``.

    Exact, and about 1.6x faster than partitioning whole rows when ``k`` is a
    small part of ``C`` (300 of 6,000): a threshold is taken from every 8th
    column (a little below the sample's own top ``k / 8``), the values at or
    above it (about 1.5 ``k`` a row) are packed into a narrow matrix, and only
    that is partitioned. A row where fewer than ``k`` or more than ``4 k``
    values pass (an unlucky sample, many ties) is partitioned whole. ``block``
    may be overwritten.
    """
    rows, n = block.shape
    q = k // _SAMPLE_STEP + _SAMPLE_MARGIN
    m = -(-n // _SAMPLE_STEP)
    if k >= n or q >= m or 4 * k >= n:
        return _partition_stats(block, min(k, n))
    sample = block[:, ::_SAMPLE_STEP].copy()
    sample.partition(m - q, axis=1)
    mask = block >= sample[:, m - q, None]
    count = mask.view(np.uint8).sum(axis=1, dtype=np.intp)  # faster than count_nonzero
    bad = np.flatnonzero((count < k) | (count > 4 * k))
    if bad.size:
        mask[bad] = False
        count[bad] = 0
    width = max(int(count.max()), k)
    packed = np.full((rows, width), -np.inf, dtype=block.dtype)
    values = block[mask]  # row by row, left to right
    # value i of row r goes to packed's flat position r * width + (i - first value of r)
    flat = np.repeat(np.arange(rows) * width - (np.cumsum(count) - count), count)
    flat += np.arange(values.size)
    packed.ravel()[flat] = values
    packed[bad] = 0.0  # computed below; finite meanwhile
    mean, std = _partition_stats(packed, k)
    if bad.size:
        mean[bad], std[bad] = _partition_stats(block[bad], k)
    return mean, std


def apply_norm(
    scores: np.ndarray,
    mean_e: np.ndarray,
    std_e: np.ndarray,
    mean_t: np.ndarray,
    std_t: np.ndarray,
) -> np.ndarray:
    """``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``, element-wise over trials."""
    std_e = np.maximum(std_e, _MIN_STD)
    std_t = np.maximum(std_t, _MIN_STD)
    return 0.5 * ((scores - mean_e) / std_e + (scores - mean_t) / std_t)


class CohortStats:
    """Per-utterance cohort statistics of an embedding table, computed on demand.

    Rows are computed the first time a trial list needs them and kept, so the
    Vox1-O/E/H lists, which share utterances, pay for each utterance once.
    """

    def __init__(
        self,
        table: EmbeddingTable,
        cohort: np.ndarray,
        mean_vec: np.ndarray | None = None,
        top_n: int | None = DEFAULT_TOP_N,
        chunk_size: int = CHUNK_ROWS,
    ):
        check_top_n(top_n, len(cohort))
        self.table = table
        self.cohort = cohort
        self.mean_vec = mean_vec
        self.top_n = top_n
        self.chunk_size = chunk_size
        self.mean = np.full(len(table), np.nan)
        self.std = np.full(len(table), np.nan)

    def compute_all(self) -> None:
        """The statistics of every row of the table (what a full trial list needs)."""
        self.get(np.arange(len(self.table)))

    def get(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) for table ``rows``, computing the ones not seen yet."""
        todo = np.unique(rows[np.isnan(self.mean[rows])])
        if todo.size:
            matrix = self.table.matrix
            self.mean[todo], self.std[todo] = cohort_stats(
                matrix if todo.size == len(matrix) else matrix[todo], self.cohort,
                self.top_n, self.chunk_size, normalize=True, mean_vec=self.mean_vec,
            )
        return self.mean[rows], self.std[rows]


def normalize_scores(
    trials: Trials,
    scores: np.ndarray,
    embeddings: EmbeddingSource,
    cohort: np.ndarray,
    mean_vec: np.ndarray | None = None,
    top_n: int | None = DEFAULT_TOP_N,
    method: str = "asnorm",
    allow_missing: bool = False,
    chunk_size: int = CHUNK_ROWS,
    stats: CohortStats | None = None,
) -> tuple[Trials, np.ndarray]:
    """AS-norm or S-norm of raw trial scores -> (kept trials, normalised scores).

    ``scores``: (T,) raw cosine scores of ``trials``; ``embeddings``: the
    evaluation embeddings (dict, table or scp path(s)), mean-subtracted with
    ``mean_vec`` like the cohort; ``cohort``: (C, D) from :func:`build_cohort`.
    ``method``: ``"asnorm"`` (top ``top_n``) or ``"snorm"`` (all cohort).
    ``stats``: a :class:`CohortStats` over the same table to reuse between
    calls (it then supplies the cohort, mean vector and N).
    """
    if method not in NORM_METHODS:
        raise ValueError(
            f"unknown score normalisation {method!r}; choose one of {list(NORM_METHODS)}"
        )
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ValueError(f"{trials.source}: {scores.shape[0]} scores for {len(trials)} trials")
    check_finite(scores, "scores", trials.source)
    if stats is None:
        table = load_embeddings(embeddings)
        top = top_n if NORM_METHODS[method] else None
        stats = CohortStats(table, cohort, mean_vec, top, chunk_size)
    kept, idx_e, idx_t, ok = resolve_trials(stats.table, trials, allow_missing)
    scores = scores[ok]
    mean_e, std_e = stats.get(idx_e)
    mean_t, std_t = stats.get(idx_t)
    normed = apply_norm(scores, mean_e, std_e, mean_t, std_t)
    check_finite(normed, "normalised scores", trials.source)
    return kept, normed


def norm_output_name(score_path: str | os.PathLike, method: str, top_n: int | None) -> str:
    """``x.score`` -> ``x.asnorm300.score`` (``x.snorm.score`` for S-norm)."""
    name = Path(score_path).name
    stem = name[: -len(".score")] if name.endswith(".score") else name
    tag = f"{method}{top_n}" if NORM_METHODS.get(method) and top_n is not None else method
    return f"{stem}.{tag}.score"


def norm_output_paths(score_paths: Sequence[str | os.PathLike], method: str = "asnorm",
                      top_n: int | None = DEFAULT_TOP_N, output_dir: str | os.PathLike | None = None
                      ) -> list[Path]:
    """Where each normalised score file goes (:func:`norm_output_name` in ``output_dir``)."""
    if method not in NORM_METHODS:
        raise ValueError(
            f"unknown score normalisation {method!r}; choose one of {list(NORM_METHODS)}"
        )
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; give a directory")
    top = top_n if NORM_METHODS[method] else None
    outs = [Path(output_dir or Path(sp).parent) / norm_output_name(sp, method, top)
            for sp in score_paths]
    if len(set(outs)) != len(outs):
        raise ValueError(f"score files with the same name would write the same output: "
                         f"{[os.fspath(p) for p in score_paths]}")
    return outs


def normalize_score_files(
    score_paths: Sequence[str | os.PathLike],
    embeddings: EmbeddingSource,
    cohort_embeddings: EmbeddingSource | np.ndarray,
    mean_vec: np.ndarray | str | os.PathLike | None = None,
    cohort_utt2spk: Mapping[str, str] | str | os.PathLike | None = None,
    top_n: int | None = DEFAULT_TOP_N,
    method: str = "asnorm",
    output_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
) -> list[Path]:
    """Normalise each score file into ``<output_dir or its dir>/<stem>.<method><N>.score``.

    The evaluation embeddings, the cohort and the per-utterance cohort
    statistics are loaded or computed once for all files.
    """
    if not score_paths:
        raise ValueError("no score files to normalise")
    outs = norm_output_paths(score_paths, method, top_n, output_dir)
    table_keys = None
    # Arrow's parser and the numpy work (matrix product, partition) release the GIL: the
    # first score file is parsed while the embeddings load, the statistics are computed
    # while the trials are looked up
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(arrow_scores.read_score_columns, score_paths[0])
        table = load_embeddings(embeddings)
        if mean_vec is not None and not isinstance(mean_vec, np.ndarray):
            mean_vec = load_mean_vec(mean_vec, table.dim)
        cohort = build_cohort(cohort_embeddings, mean_vec, cohort_utt2spk, allow_missing)
        top = top_n if NORM_METHODS[method] else None
        stats = CohortStats(table, cohort, mean_vec, top)
        all_stats = ex.submit(stats.compute_all)
        for i, (sp, out) in enumerate(zip(score_paths, outs, strict=True)):
            cols = first.result() if i == 0 else arrow_scores.read_score_columns(sp)
            if cols is not None:
                if table_keys is None:
                    table_keys = arrow_scores.pa.array(table.keys)
                if _normalize_columns(cols, table_keys, stats, all_stats, out):
                    logger.info("%s: %d trials of %s -> %s", method, len(cols.scores), sp, out)
                    continue
            trials, scores = read_scores(sp)
            all_stats.result()
            kept, normed = normalize_scores(
                trials, scores, table, cohort, method=method, allow_missing=allow_missing,
                stats=stats,
            )
            write_scores(out, kept, normed)
            logger.info("%s: %d trials of %s -> %s", method, len(kept), sp, out)
    return outs


def _normalize_columns(cols: arrow_scores.ScoreColumns, table_keys: object, stats: CohortStats,
                       all_stats: Future, out: Path) -> bool:
    """The fast path of :func:`normalize_score_files` for one file; ``False`` to fall back.

    It gives up (and the Python path takes over, with its messages and
    ``allow_missing``) when a key is not in the table or a score is too large
    to format through a decimal.
    """
    idx_e = arrow_scores.lookup(cols.enroll, table_keys)
    idx_t = arrow_scores.lookup(cols.test, table_keys) if idx_e is not None else None
    if idx_t is None:
        return False
    all_stats.result()
    normed = apply_norm(cols.scores, stats.mean[idx_e], stats.std[idx_e],
                        stats.mean[idx_t], stats.std[idx_t])
    check_finite(normed, "normalised scores", cols.source)
    return arrow_scores.write_score_columns(out, cols, normed)
