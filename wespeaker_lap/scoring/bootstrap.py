"""EER and minDCF with bootstrap confidence intervals that resample *speakers*.

Trials of one speaker are not independent (they share the speaker's voice and
recordings), so resampling trials understates the uncertainty. Following the
speaker-level bootstrap of Poh and Bengio, "Estimating the Confidence Interval
of Expected Performance Curve in Biometric Authentication Using Joint
Bootstrap", ICASSP 2007, each replicate draws the test speakers with
replacement; a speaker drawn ``m`` times counts ``m`` times:

* a target trial of speaker ``s`` gets weight ``m_s``;
* a non-target trial between speakers ``a`` and ``b`` gets weight ``m_a * m_b``
  (every pair of drawn copies brings the pair's trials).

EER and minDCF are then computed on the weighted trials. The interval is the
percentile interval of the replicates (``alpha / 2`` and ``1 - alpha / 2``).
Metrics follow the NIST / VoxCeleb definitions: a trial is accepted when its
score is at or above the threshold; minDCF(p) =
``min_t (p P_miss + (1 - p) P_fa) / min(p, 1 - p)`` (C_miss = C_fa = 1).
numpy only.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> spk = np.repeat(np.arange(20), 10)
>>> e, t = rng.integers(0, 200, 4000), rng.integers(0, 200, 4000)
>>> lab = (spk[e] == spk[t]).astype(int)
>>> s = lab + rng.normal(0, 0.5, 4000)
>>> r = bootstrap_metrics(s, lab, spk[e], spk[t], num_boot=200, seed=0)
>>> r["eer_ci"][0] <= r["eer"] <= r["eer_ci"][1]
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wespeaker_lap.scoring.metrics import check_scores_labels

P_TARGETS = (0.01, 0.05)


def weighted_rates(scores_sorted_labels: np.ndarray, weights: np.ndarray,
                   last_of_tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_miss, P_fa) at every operating point of weighted trials in ascending score order.

    scores_sorted_labels: (N,) bool, the labels in ascending score order; weights:
    (N,) the trial weights in that order; last_of_tie: indices of the last trial of
    each run of tied scores. Point 0 accepts everything, the last rejects everything.
    Returns two (P + 1,) arrays; P_miss rises, P_fa falls.
    """
    lab = scores_sorted_labels
    wt = np.where(lab, weights, 0.0)
    wn = np.where(lab, 0.0, weights)
    tar, non = wt.sum(), wn.sum()
    if tar <= 0 or non <= 0:
        raise ValueError("a replicate without target or non-target weight")
    tar_below = np.cumsum(wt)[last_of_tie]
    non_below = np.cumsum(wn)[last_of_tie]
    p_miss = np.concatenate([[0.0], tar_below / tar])
    p_fa = np.concatenate([[1.0], 1.0 - non_below / non])
    return p_miss, p_fa


def eer_from_rates(p_miss: np.ndarray, p_fa: np.ndarray) -> float:
    """EER (a fraction) where the staircase crosses P_miss = P_fa, linearly interpolated."""
    diff = p_miss - p_fa
    k = int(np.argmax(diff >= 0))
    d0, d1 = diff[k - 1], diff[k]
    a = d0 / (d0 - d1)
    return float(p_fa[k - 1] + a * (p_fa[k] - p_fa[k - 1]))


def min_dcf_from_rates(p_miss: np.ndarray, p_fa: np.ndarray, p_target: float) -> float:
    """Normalised minDCF at ``p_target`` (C_miss = C_fa = 1)."""
    dcf = p_target * p_miss + (1.0 - p_target) * p_fa
    return float(dcf.min() / min(p_target, 1.0 - p_target))


def _check(scores, labels, enroll_spk, test_spk):
    enroll_spk = np.asarray(enroll_spk).reshape(-1)
    test_spk = np.asarray(test_spk).reshape(-1)
    n, n_labels = np.asarray(scores).size, np.asarray(labels).size
    if not (n_labels == enroll_spk.size == test_spk.size == n):
        raise ValueError(f"{n} scores, {n_labels} labels, {enroll_spk.size} enroll and "
                         f"{test_spk.size} test speakers: need one of each per trial")
    scores, labels = check_scores_labels(scores, labels)
    same = enroll_spk == test_spk
    if (same != labels).any():
        i = int(np.flatnonzero(same != labels)[0])
        raise ValueError(f"trial {i}: label {'target' if labels[i] else 'nontarget'} but "
                         f"speakers {enroll_spk[i]!r} / {test_spk[i]!r}: labels and speakers "
                         "disagree")
    return scores, labels, enroll_spk, test_spk


def bootstrap_metrics(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    enroll_spk: Sequence[str] | np.ndarray,
    test_spk: Sequence[str] | np.ndarray,
    num_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    p_targets: Sequence[float] = P_TARGETS,
) -> dict[str, object]:
    """EER and minDCF of all trials, with speaker-bootstrap percentile intervals.

    scores, labels (1 target / 0 non-target), enroll_spk, test_spk: (N,) each.
    Returns ``{"eer", "eer_ci": (lo, hi), "eer_std", "min_dcf_<p>", "min_dcf_<p>_ci",
    "num_trials", "num_speakers", "num_boot"}``; rates are fractions.
    """
    if num_boot < 10:
        raise ValueError(f"num_boot must be >= 10, got {num_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    scores, labels, enroll_spk, test_spk = _check(scores, labels, enroll_spk, test_spk)
    spks, inv = np.unique(np.concatenate([enroll_spk, test_spk]), return_inverse=True)
    if spks.size < 2:
        raise ValueError("need at least 2 speakers to bootstrap over speakers")
    ie, it = inv[: scores.size], inv[scores.size :]
    order = np.argsort(scores, kind="stable")
    s, lab, ie, it = scores[order], labels[order], ie[order], it[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))

    def metrics(w: np.ndarray) -> list[float]:
        pm, pf = weighted_rates(lab, w, last)
        return [eer_from_rates(pm, pf)] + [min_dcf_from_rates(pm, pf, p) for p in p_targets]

    full = metrics(np.ones(s.size))
    rng = np.random.default_rng(seed)
    reps = []
    tries = 0
    while len(reps) < num_boot:
        tries += 1
        if tries > 10 * num_boot:
            raise ValueError("too few speakers: most replicates have no target or "
                             "non-target trial")
        m = np.bincount(rng.integers(0, spks.size, spks.size), minlength=spks.size)
        w = np.where(lab, m[ie], m[ie] * m[it]).astype(np.float64)
        if not (w[lab].sum() > 0 and w[~lab].sum() > 0):
            continue
        reps.append(metrics(w))
    r = np.asarray(reps)
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2], axis=0)
    out: dict[str, object] = {
        "eer": full[0], "eer_ci": (float(lo[0]), float(hi[0])), "eer_std": float(r[:, 0].std()),
    }
    for j, p in enumerate(p_targets, start=1):
        out[f"min_dcf_{p:g}"] = full[j]
        out[f"min_dcf_{p:g}_ci"] = (float(lo[j]), float(hi[j]))
    out.update(num_trials=int(s.size), num_speakers=int(spks.size), num_boot=int(num_boot))
    return out


def format_ci(r: dict[str, object]) -> str:
    """One line: ``EER 2.31 % [1.80, 2.95]  minDCF0.01 0.312 [...]  minDCF0.05 ...``."""
    lo, hi = r["eer_ci"]
    parts = [f"EER {100 * r['eer']:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}]"]
    for key in sorted(k for k in r if k.startswith("min_dcf_") and not k.endswith("_ci")):
        a, b = r[f"{key}_ci"]
        parts.append(f"minDCF{key[8:]} {r[key]:.3f} [{a:.3f}, {b:.3f}]")
    return "  ".join(parts)
