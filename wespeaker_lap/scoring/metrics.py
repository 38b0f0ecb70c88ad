"""Verification metrics: EER, minDCF, Cllr and the DET curve, vectorised by one sort.

Definitions (NIST SRE and the VoxCeleb challenges): a trial is
accepted when its score is at or above the threshold. Over all thresholds
(every distinct score, plus accept-all and reject-all):

* ``P_miss(t)`` = targets scored below ``t`` / targets,
  ``P_fa(t)`` = nontargets scored at or above ``t`` / nontargets.
* EER: where the (P_fa, P_miss) staircase crosses ``P_miss = P_fa``, linearly
  interpolated between the two operating points that straddle it.
* minDCF(p): ``min_t C_miss p P_miss + C_fa (1-p) P_fa``, divided by
  ``min(C_miss p, C_fa (1-p))`` (the cost of the best trivial system).

>>> import numpy as np
>>> scores = np.array([0.9, 0.8, 0.3, 0.4, 0.1])
>>> labels = np.array([1, 1, 1, 0, 0])
>>> eer, thr = compute_eer(scores, labels)
>>> round(eer, 4)
0.3333
"""

from __future__ import annotations

import numpy as np


def check_scores_labels(scores: np.ndarray, labels: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 scores and bool labels; empty, non-finite, non-0/1 or one-class
    input is a ``ValueError``."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if scores.size == 0:
        raise ValueError("no trials to evaluate")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or inf")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 1 (target) or 0 (nontarget)")
    labels = labels.astype(bool)
    n_tar = int(labels.sum())
    if n_tar == 0 or n_tar == labels.size:
        raise ValueError(
            f"need both target and nontarget trials, got {n_tar} targets and "
            f"{labels.size - n_tar} nontargets"
        )
    return scores, labels


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every operating point -> (p_miss, p_fa, thresholds).

    ``thresholds[k]`` is the smallest accepted score at point ``k``: point 0
    accepts everything (``-inf``), the last rejects everything (``+inf``).
    ``p_miss`` rises and ``p_fa`` falls along the arrays. One ``O(n log n)`` sort.
    """
    scores, labels = check_scores_labels(scores, labels)
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    lab = labels[order]
    n_tar = lab.sum()
    n_non = lab.size - n_tar
    # cumulative counts of targets / nontargets at or below each sorted position
    tar_below = np.cumsum(lab)
    non_below = np.arange(1, lab.size + 1) - tar_below
    # operating points only between distinct scores: last position of each run of ties
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    p_miss = np.concatenate([[0.0], tar_below[last] / n_tar])
    p_fa = np.concatenate([[1.0], 1.0 - non_below[last] / n_non])
    # point k >= 1 rejects every score up to s[last[k-1]]: it accepts from the next
    # distinct score on; point 0 accepts all (-inf), the last rejects all (+inf)
    thresholds = np.concatenate([[-np.inf], s[last[:-1] + 1], [np.inf]])
    return p_miss, p_fa, thresholds


def _eer_from_curve(p_miss: np.ndarray, p_fa: np.ndarray, thr: np.ndarray) -> tuple[float, float]:
    diff = p_miss - p_fa  # rises from -1 (accept all) to +1 (reject all)
    k = int(np.argmax(diff >= 0))  # first point at or past the crossing; k >= 1
    d0, d1 = diff[k - 1], diff[k]
    a = d0 / (d0 - d1)  # fraction of the way from point k-1 to k where diff == 0
    eer = p_fa[k - 1] + a * (p_fa[k] - p_fa[k - 1])
    threshold = thr[k] if np.isfinite(thr[k]) else thr[k - 1]
    return float(eer), float(threshold)


def _min_dcf_from_curve(
    p_miss: np.ndarray, p_fa: np.ndarray, thr: np.ndarray, p_target: float, c_miss: float,
    c_fa: float,
) -> tuple[float, float]:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    k = int(np.argmin(dcf))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[k] / norm), float(thr[k])


def compute_eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate (a fraction, not %) and the threshold at the crossing.

    ``scores``: (N,) float; ``labels``: (N,) 1 = target, 0 = nontarget.
    """
    return _eer_from_curve(*det_curve(scores, labels))


def compute_min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost and its threshold.

    ``min_t (c_miss p P_miss(t) + c_fa (1-p) P_fa(t)) / min(c_miss p, c_fa (1-p))``.
    """
    return _min_dcf_from_curve(*det_curve(scores, labels), p_target, c_miss, c_fa)


def compute_cllr(llrs: np.ndarray, labels: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits (natural-log LLRs); 1.0 for an uninformative system."""
    llrs, labels = check_scores_labels(llrs, labels)
    tar = np.logaddexp(0.0, -llrs[labels]).mean()
    non = np.logaddexp(0.0, llrs[~labels]).mean()
    return float(0.5 * (tar + non) / np.log(2.0))


def compute_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    p_targets: tuple[float, ...] = (0.01, 0.05),
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, float]:
    """EER (%), minDCF at each p_target and the trial counts, from one DET curve.

    Returns ``{"eer": %, "eer_threshold", "min_dcf_0.01", "min_dcf_0.01_threshold", ...,
    "n_target", "n_nontarget"}``.
    """
    scores, labels = check_scores_labels(scores, labels)
    curve = det_curve(scores, labels)
    eer, eer_thr = _eer_from_curve(*curve)
    out: dict[str, float] = {"eer": 100.0 * eer, "eer_threshold": eer_thr}
    for p in p_targets:
        dcf, thr = _min_dcf_from_curve(*curve, p, c_miss, c_fa)
        out[f"min_dcf_{p:g}"] = dcf
        out[f"min_dcf_{p:g}_threshold"] = thr
    out["n_target"] = int(labels.sum())
    out["n_nontarget"] = int(labels.size - labels.sum())
    return out


def format_metrics(name: str, m: dict[str, float]) -> str:
    """One summary line: ``name: EER = 0.865%, minDCF(p=0.01) = 0.0912, ... (n trials)``."""
    dcfs = ", ".join(
        f"minDCF(p={k[len('min_dcf_'):]}) = {v:.4f}"
        for k, v in m.items()
        if k.startswith("min_dcf_") and not k.endswith("_threshold")
    )
    return (
        f"{name}: EER = {m['eer']:.3f}%, {dcfs} "
        f"({m['n_target']} target, {m['n_nontarget']} nontarget trials)"
    )
