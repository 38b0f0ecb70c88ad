"""Quality-measure-function (QMF) calibration: logistic regression on score + quality.

Each trial gets a feature vector built from named measures (see
:data:`TRIAL_FEATURES`): the score itself, and for both sides the log duration,
the norm of the raw embedding (before mean subtraction) and the mean of its
top-N cohort scores (the AS-norm ``mu``). A prior-weighted logistic regression
maps the features to a log-likelihood ratio:

    llr = w . standardise(x) + b

fitted by minimising ``p * mean_tar log(1 + e^-(llr + logit p)) +
(1 - p) * mean_non log(1 + e^(llr + logit p))`` (+ a small L2 term on ``w``)
with L-BFGS. At ``p = 0.5`` this is the Cllr objective, so the output is a
calibrated natural-log LLR. The fitted model is saved as JSON.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.random(2000) < 0.5
>>> x = (rng.normal(size=2000) + 2.0 * y)[:, None]
>>> model = QMFCalibrator.fit(x, y, ["score"])
>>> slope = model.weights[0] / model.scale[0]  # the true LLR is 2 x - 2
>>> bool(abs(slope - 2.0) < 0.25)
True
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from wespeaker_lap.io.files import atomic_write, read_utt2dur
from wespeaker_lap.io.xvectors import (
    EmbeddingSource,
    EmbeddingTable,
    load_embeddings,
    load_mean_vec,
)
from wespeaker_lap.scoring.metrics import compute_cllr
from wespeaker_lap.scoring.score import MissingEmbeddingError, Trials, read_scores, write_scores
from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N, CohortStats, build_cohort

logger = logging.getLogger(__name__)

# per-utterance measure -> the input it needs
UTTERANCE_MEASURES = {
    "log_dur": "durations (utt2dur)",
    "norm": "embeddings",
    "cohort_mean": "embeddings and a cohort",
}
TRIAL_FEATURES = ("score",) + tuple(
    f"{m}_{side}" for m in UTTERANCE_MEASURES for side in ("enroll", "test")
)
DEFAULT_FEATURES = TRIAL_FEATURES
MODEL_FORMAT = "wespeaker_lap.qmf"


def check_features(features: Sequence[str]) -> list[str]:
    """Validate feature names; unknown or repeated names raise ``ValueError``."""
    features = list(features)
    unknown = [f for f in features if f not in TRIAL_FEATURES]
    if unknown:
        raise ValueError(f"unknown QMF features {unknown}; choose from {list(TRIAL_FEATURES)}")
    if len(set(features)) != len(features) or not features:
        raise ValueError(f"QMF features must be non-empty and distinct, got {features}")
    return features


def trial_features(
    trials: Trials,
    scores: np.ndarray,
    features: Sequence[str] = DEFAULT_FEATURES,
    table: EmbeddingTable | None = None,
    durations: Mapping[str, float] | None = None,
    stats: CohortStats | None = None,
    allow_missing: bool = False,
) -> tuple[Trials, np.ndarray]:
    """Feature matrix ``(T, F)`` (float64) of the trials, in ``features`` order.

    ``table``: the evaluation embeddings (for ``norm_*``); ``stats``: a
    :class:`CohortStats` over that table (for ``cohort_mean_*``; it gives the
    top-N of its own cohort); ``durations``: seconds per utterance (for
    ``log_dur_*``). A trial whose utterance lacks a needed input is an error
    naming the count and first keys, or with ``allow_missing`` is dropped.
    Returns the kept trials and their features.
    """
    features = check_features(features)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(trials),):
        raise ValueError(f"{trials.source}: {scores.shape[0]} scores for {len(trials)} trials")
    if len(trials) == 0:
        raise ValueError(f"{trials.source}: empty trial list")
    needed = {f.rsplit("_", 1)[0] for f in features if f != "score"}
    if "cohort_mean" in needed and stats is None:
        raise ValueError("QMF feature cohort_mean_* needs a cohort (cohort embeddings)")
    if stats is not None:
        table = stats.table if table is None else table
        if stats.table is not table:
            raise ValueError("the cohort statistics must be over the same embedding table")
    if needed & {"norm", "cohort_mean"} and table is None:
        raise ValueError("QMF features norm_* / cohort_mean_* need the trial embeddings")
    if "log_dur" in needed and durations is None:
        raise ValueError("QMF features log_dur_* need durations (utt2dur)")

    ok = np.ones(len(trials), dtype=bool)
    rows = {}
    if table is not None and needed & {"norm", "cohort_mean"}:
        for side, keys in (("enroll", trials.enroll), ("test", trials.test)):
            rows[side], found = table.lookup(keys)
            ok &= found
    durs = {}
    if "log_dur" in needed:
        for side, keys in (("enroll", trials.enroll), ("test", trials.test)):
            d = np.fromiter((durations.get(k, np.nan) for k in keys), np.float64, len(keys))
            durs[side] = d
            ok &= ~np.isnan(d)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        keys = {k for i in bad for k in (trials.enroll[i], trials.test[i])}
        missing = sorted(
            k for k in keys
            if (rows and k not in table.index) or (durs and k not in durations)
        )
        msg = (
            f"{trials.source}: {bad.size} of {len(trials)} trials name utterances without "
            f"the embedding or duration that QMF needs ({len(missing)} utterances; first: "
            f"{', '.join(missing[:5])})"
        )
        if not allow_missing or bad.size == len(trials):
            raise MissingEmbeddingError(msg)
        logger.warning("%s; skipping them", msg)
        trials = trials.subset(ok)
        scores = scores[ok]
        rows = {s: r[ok] for s, r in rows.items()}
        durs = {s: d[ok] for s, d in durs.items()}

    norms = None
    if "norm" in needed:
        norms = np.linalg.norm(table.matrix.astype(np.float64), axis=1)
    cols = []
    for f in features:
        if f == "score":
            cols.append(scores)
            continue
        measure, side = f.rsplit("_", 1)
        if measure == "log_dur":
            cols.append(np.log(durs[side]))
        elif measure == "norm":
            cols.append(norms[rows[side]])
        else:  # cohort_mean
            cols.append(stats.get(rows[side])[0])
    x = np.stack(cols, axis=1)
    if not np.isfinite(x).all():
        raise ValueError(f"{trials.source}: NaN or inf in QMF features")
    return trials, x


def fit_logistic_regression(
    x: np.ndarray,
    y: np.ndarray,
    p_target: float = 0.5,
    l2: float = 1e-4,
    max_iter: int = 1000,
) -> tuple[np.ndarray, float]:
    """Prior-weighted logistic regression -> (weights (F,), bias); ``x`` (N, F), ``y`` (N,) 0/1.

    Targets weigh ``p_target / N_tar`` each and nontargets ``(1 - p_target) /
    N_non``; ``logit(p_target)`` is added to the linear output during fitting,
    so ``x @ w + b`` is a log-likelihood ratio. ``l2`` penalises ``|w|^2 / 2``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} do not match {y.shape[0]} labels")
    n_tar = int(y.sum())
    n_non = y.size - n_tar
    if n_tar == 0 or n_non == 0:
        raise ValueError(f"need target and nontarget trials, got {n_tar} and {n_non}")
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    sign = np.where(y, 1.0, -1.0)
    weight = np.where(y, p_target / n_tar, (1.0 - p_target) / n_non)
    offset = math.log(p_target / (1.0 - p_target))
    n_feat = x.shape[1]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:n_feat], theta[n_feat]
        margin = sign * (x @ w + b + offset)
        loss = float(weight @ np.logaddexp(0.0, -margin)) + 0.5 * l2 * float(w @ w)
        g = -weight * sign * expit(-margin)  # d loss / d z
        grad = np.empty_like(theta)
        grad[:n_feat] = x.T @ g + l2 * w
        grad[n_feat] = g.sum()
        return loss, grad

    res = minimize(
        loss_grad, np.zeros(n_feat + 1), jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    if not res.success:
        logger.warning("logistic regression did not converge: %s", res.message)
    return res.x[:n_feat].copy(), float(res.x[n_feat])


@dataclass
class QMFCalibrator:
    """A fitted QMF model: feature names, standardisation and LLR weights.

    ``llr(x) = ((x - shift) / scale) @ weights + bias`` with ``x`` (T, F) in
    ``features`` order. ``top_n`` records the cohort top-N used for the
    ``cohort_mean_*`` features, so applying it uses the same.
    """

    features: list[str]
    shift: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    p_target: float = 0.5
    top_n: int | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        labels: np.ndarray,
        features: Sequence[str],
        p_target: float = 0.5,
        l2: float = 1e-4,
        top_n: int | None = None,
    ) -> QMFCalibrator:
        """Fit on features ``x`` (T, F) and labels (T,) 1/0."""
        features = check_features(features)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(features):
            raise ValueError(f"features of shape {x.shape} for names {features}")
        shift = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        w, b = fit_logistic_regression((x - shift) / scale, labels, p_target, l2)
        n_tar = int(np.sum(labels))
        info = {"n_target": n_tar, "n_nontarget": int(np.size(labels)) - n_tar}
        return cls(features, shift, scale, w, b, p_target, top_n, info)

    def llr(self, x: np.ndarray) -> np.ndarray:
        """Calibrated log-likelihood ratios of ``x`` (T, F) -> (T,)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"features of shape {x.shape}; the model wants {self.features}")
        return ((x - self.shift) / self.scale) @ self.weights + self.bias

    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "version": 1,
            "features": self.features,
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "p_target": self.p_target,
            "top_n": self.top_n,
            "info": self.info,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as JSON, atomically."""
        with atomic_write(path) as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> QMFCalibrator:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such QMF model: {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a QMF model: not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{path}: not a QMF model (format {fmt!r})")
        try:
            return cls._from_dict(d, path)
        except (KeyError, TypeError, ValueError) as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"{path}: a corrupt QMF model ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_dict(cls, d: dict, path: Path) -> QMFCalibrator:
        features = check_features(d["features"])
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("shift", "scale", "weights")}
        for k, a in arrays.items():
            if a.shape != (len(features),):
                raise ValueError(f"{path}: {k} has {a.size} values for {len(features)} features")
        return cls(
            features, arrays["shift"], arrays["scale"], arrays["weights"], float(d["bias"]),
            float(d.get("p_target", 0.5)), d.get("top_n"), d.get("info", {}),
        )


# ---------------------------------------------------------------------------
# file-level helpers for recipes and the entry point


@dataclass
class QualitySources:
    """What the QMF features read: embeddings, cohort statistics and durations."""

    table: EmbeddingTable | None = None
    stats: CohortStats | None = None
    durations: dict[str, float] | None = None


def load_quality_sources(
    features: Sequence[str],
    embeddings: EmbeddingSource | None = None,
    mean_vec: np.ndarray | str | os.PathLike | None = None,
    cohort_embeddings: EmbeddingSource | np.ndarray | None = None,
    cohort_utt2spk: Mapping[str, str] | str | os.PathLike | None = None,
    top_n: int | None = DEFAULT_TOP_N,
    utt2dur: Mapping[str, float] | str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    allow_missing: bool = False,
) -> QualitySources:
    """Load only what ``features`` need; a missing required input is a ``ValueError``.

    ``utt2dur``: a dict, or one or more Kaldi ``utt2dur`` files (merged).
    """
    features = check_features(features)
    needed = {f.rsplit("_", 1)[0] for f in features if f != "score"}
    src = QualitySources()
    if needed & {"norm", "cohort_mean"}:
        if embeddings is None:
            raise ValueError(f"QMF features {sorted(needed)} need the trial embeddings")
        src.table = load_embeddings(embeddings)
    if "cohort_mean" in needed:
        if cohort_embeddings is None:
            raise ValueError("QMF features cohort_mean_* need cohort embeddings")
        if mean_vec is not None and not isinstance(mean_vec, np.ndarray):
            mean_vec = load_mean_vec(mean_vec, src.table.dim)
        cohort = build_cohort(cohort_embeddings, mean_vec, cohort_utt2spk, allow_missing)
        src.stats = CohortStats(src.table, cohort, mean_vec, top_n)
    if "log_dur" in needed:
        if utt2dur is None:
            raise ValueError("QMF features log_dur_* need durations (utt2dur)")
        if isinstance(utt2dur, Mapping):
            src.durations = dict(utt2dur)
        else:
            paths = [utt2dur] if isinstance(utt2dur, str | os.PathLike) else list(utt2dur)
            src.durations = {}
            for p in paths:
                d = read_utt2dur(p)
                dup = src.durations.keys() & d.keys()
                if dup:
                    raise ValueError(f"{p}: durations given twice, e.g. {sorted(dup)[:3]}")
                src.durations.update(d)
    return src


def fit_qmf_file(
    score_path: str | os.PathLike,
    sources: QualitySources,
    features: Sequence[str] = DEFAULT_FEATURES,
    p_target: float = 0.5,
    l2: float = 1e-4,
    allow_missing: bool = False,
) -> QMFCalibrator:
    """Fit QMF on a labelled score file (e.g. ~30k trials of the training speakers)."""
    trials, scores = read_scores(score_path, require_labels=True)
    kept, x = trial_features(
        trials, scores, features, sources.table, sources.durations, sources.stats, allow_missing
    )
    top_n = sources.stats.top_n if sources.stats is not None else None
    n_tar = int(np.sum(kept.labels == 1))
    if n_tar == 0 or n_tar == len(kept):
        raise ValueError(f"{score_path}: QMF needs target and nontarget trials to fit on, got "
                         f"{n_tar} target and {len(kept) - n_tar} nontarget")
    model = QMFCalibrator.fit(x, kept.labels, features, p_target, l2, top_n)
    model.info["fit_on"] = str(score_path)
    cllr = compute_cllr(model.llr(x), kept.labels)
    model.info["cllr_fit"] = cllr
    logger.info("QMF fitted on %d trials of %s: Cllr %.4f on them", len(kept), score_path, cllr)
    return model


def qmf_output_name(score_path: str | os.PathLike) -> str:
    """``x.score`` -> ``x.qmf.score``."""
    name = Path(score_path).name
    stem = name[: -len(".score")] if name.endswith(".score") else name
    return f"{stem}.qmf.score"


def apply_qmf_files(
    model: QMFCalibrator,
    score_paths: Sequence[str | os.PathLike],
    sources: QualitySources,
    output_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
) -> list[Path]:
    """Calibrate each score file into ``<output_dir or its dir>/<stem>.qmf.score`` (LLRs)."""
    if sources.stats is not None and model.top_n != sources.stats.top_n:
        raise ValueError(
            f"the model was fitted with cohort top-N {model.top_n}, "
            f"the cohort statistics use {sources.stats.top_n}"
        )
    outs = []
    for sp in score_paths:
        trials, scores = read_scores(sp)
        kept, x = trial_features(
            trials, scores, model.features, sources.table, sources.durations, sources.stats,
            allow_missing,
        )
        out = Path(output_dir or Path(sp).parent) / qmf_output_name(sp)
        write_scores(out, kept, model.llr(x))
        logger.info("QMF: %d trials of %s -> %s", len(kept), sp, out)
        outs.append(out)
    return outs
