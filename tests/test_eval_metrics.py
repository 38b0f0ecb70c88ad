"""EER / minDCF / Cllr against hand-computed cases and brute force over thresholds."""

import numpy as np
import pytest

from wespeaker_lap.scoring.metrics import (
    compute_cllr,
    compute_eer,
    compute_metrics,
    compute_min_dcf,
    det_curve,
    format_metrics,
)


def _brute_force_curve(scores, labels):
    """(p_miss, p_fa) at every threshold, accepting score >= t, by a plain loop."""
    tar, non = scores[labels == 1], scores[labels == 0]
    thresholds = [-np.inf, *sorted(set(scores.tolist()))[1:], np.inf]
    pm, pf = [], []
    for t in thresholds:
        pm.append(np.mean(tar < t))
        pf.append(np.mean(non >= t))
    return np.array(pm), np.array(pf)


def _roc_crossing(pm, pf):
    """Where the polyline through the (p_fa, p_miss) points meets p_miss == p_fa."""
    for i in range(len(pm) - 1):
        d0, d1 = pm[i] - pf[i], pm[i + 1] - pf[i + 1]
        if d0 < 0 <= d1:
            # solve p_miss(a) == p_fa(a) on the segment
            a = d0 / (d0 - d1)
            x = pf[i] + a * (pf[i + 1] - pf[i])
            y = pm[i] + a * (pm[i + 1] - pm[i])
            assert abs(x - y) < 1e-12
            return x
    raise AssertionError("no crossing")


def test_eer_and_min_dcf_of_hand_computed_example():
    # sorted: 0.1 N, 0.3 T, 0.4 N, 0.8 T, 0.9 T. Operating points (p_miss, p_fa):
    # (0, 1) (0, .5) (1/3, .5) (1/3, 0) (2/3, 0) (1, 0): the staircase crosses the
    # diagonal on the flat step p_miss = 1/3 -> EER 1/3.
    scores = np.array([0.9, 0.8, 0.3, 0.4, 0.1])
    labels = np.array([1, 1, 1, 0, 0])
    eer, thr = compute_eer(scores, labels)
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.8)
    # normalised DCF(p=0.01) = p_miss + 99 p_fa -> minimum 1/3 at (1/3, 0)
    dcf, dcf_thr = compute_min_dcf(scores, labels, 0.01)
    assert dcf == pytest.approx(1 / 3)
    assert dcf_thr == pytest.approx(0.8)
    # p=0.5: p_miss + p_fa, minimum also 1/3
    assert compute_min_dcf(scores, labels, 0.5)[0] == pytest.approx(1 / 3)


def test_perfect_separation_gives_zero_eer_and_min_dcf():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0])
    assert compute_eer(scores, labels)[0] == 0.0
    assert compute_min_dcf(scores, labels, 0.01)[0] == 0.0


def test_reversed_scores_give_full_eer():
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    labels = np.array([1, 1, 0, 0])
    assert compute_eer(scores, labels)[0] == pytest.approx(1.0)


def test_all_tied_scores_give_half_eer_and_trivial_dcf():
    scores = np.zeros(10)
    labels = np.array([1] * 3 + [0] * 7)
    assert compute_eer(scores, labels)[0] == pytest.approx(0.5)
    # only accept-all (cost 0.99 -> 99 normalised) and reject-all (0.01 -> 1)
    assert compute_min_dcf(scores, labels, 0.01)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_det_curve_matches_brute_force_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.normal(size=n) + 1.5 * labels, 1)  # rounding makes ties
    pm, pf, _ = det_curve(scores, labels)
    bpm, bpf = _brute_force_curve(scores, labels)
    np.testing.assert_allclose(pm, bpm)
    np.testing.assert_allclose(pf, bpf)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_eer_equals_roc_crossing_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n = 500
    labels = (rng.random(n) < 0.2).astype(int)
    scores = rng.normal(size=n) + 1.0 * labels
    if seed % 2:
        scores = np.round(scores, 1)
    bpm, bpf = _brute_force_curve(scores, labels)
    eer, _ = compute_eer(scores, labels)
    assert eer == pytest.approx(_roc_crossing(bpm, bpf), abs=1e-12)


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.3])
def test_min_dcf_equals_brute_force_over_all_thresholds(p_target):
    rng = np.random.default_rng(7)
    n = 800
    labels = (rng.random(n) < 0.1).astype(int)
    scores = rng.normal(size=n) + 2.0 * labels
    c_miss, c_fa = 1.0, 1.0
    tar, non = scores[labels == 1], scores[labels == 0]
    best = np.inf
    for t in [-np.inf, *scores.tolist(), np.inf]:
        cost = c_miss * p_target * np.mean(tar < t) + c_fa * (1 - p_target) * np.mean(non >= t)
        best = min(best, cost)
    best /= min(c_miss * p_target, c_fa * (1 - p_target))
    assert compute_min_dcf(scores, labels, p_target)[0] == pytest.approx(best, abs=1e-12)


def test_compute_metrics_reports_eer_percent_dcfs_and_counts():
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.1).astype(int)
    scores = rng.normal(size=2000) + 2.5 * labels
    m = compute_metrics(scores, labels)
    assert m["eer"] == pytest.approx(100 * compute_eer(scores, labels)[0])
    assert m["min_dcf_0.01"] == pytest.approx(compute_min_dcf(scores, labels, 0.01)[0])
    assert m["min_dcf_0.05"] == pytest.approx(compute_min_dcf(scores, labels, 0.05)[0])
    assert m["n_target"] + m["n_nontarget"] == 2000
    line = format_metrics("x.score", m)
    assert line.startswith("x.score: EER = ") and "minDCF(p=0.01)" in line and "\n" not in line


def test_metrics_reject_nan_scores_one_class_and_empty_input():
    with pytest.raises(ValueError, match="NaN"):
        compute_eer(np.array([0.1, np.nan]), np.array([1, 0]))
    with pytest.raises(ValueError, match="both target and nontarget"):
        compute_eer(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="no trials"):
        compute_eer(np.array([]), np.array([]))


def test_cllr_is_one_bit_for_zero_llrs_and_small_for_good_llrs():
    labels = np.array([1, 0] * 50)
    assert compute_cllr(np.zeros(100), labels) == pytest.approx(1.0)
    assert compute_cllr(np.where(labels == 1, 10.0, -10.0), labels) < 1e-3
