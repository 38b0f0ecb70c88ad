"""Speaker-bootstrap confidence intervals for EER and minDCF (scoring/bootstrap.py)."""

import numpy as np
import pytest

from wespeaker_lap.scoring.bootstrap import bootstrap_metrics, format_ci
from wespeaker_lap.scoring.metrics import compute_eer, compute_min_dcf


def trials(num_spk=30, per_spk=8, n=6000, noise=0.7, seed=0):
    rng = np.random.default_rng(seed)
    spk = np.repeat(np.arange(num_spk), per_spk).astype(str)
    e, t = rng.integers(0, spk.size, n), rng.integers(0, spk.size, n)
    same = rng.random(n) < 0.5  # about half the trials are targets
    t[same] = (e[same] // per_spk) * per_spk + rng.integers(0, per_spk, int(same.sum()))
    keep = e != t
    e, t = e[keep], t[keep]
    lab = (spk[e] == spk[t]).astype(int)
    # a per-speaker offset makes trials of one speaker correlated
    off = rng.normal(0, 0.4, num_spk)
    s = lab + off[spk[e].astype(int)] + rng.normal(0, noise, e.size)
    return s, lab, spk[e], spk[t]


def test_point_estimates_match_the_unweighted_metrics():
    s, lab, se, st = trials()
    r = bootstrap_metrics(s, lab, se, st, num_boot=50)
    assert r["eer"] == pytest.approx(compute_eer(s, lab)[0], abs=1e-12)
    assert r["min_dcf_0.01"] == pytest.approx(compute_min_dcf(s, lab, 0.01)[0], abs=1e-12)
    assert r["min_dcf_0.05"] == pytest.approx(compute_min_dcf(s, lab, 0.05)[0], abs=1e-12)
    assert r["num_speakers"] == 30


def test_interval_contains_the_estimate_and_narrows_with_more_speakers():
    small = bootstrap_metrics(*trials(num_spk=10, n=3000), num_boot=200, seed=1)
    big = bootstrap_metrics(*trials(num_spk=120, n=40000), num_boot=200, seed=1)
    for r in (small, big):
        lo, hi = r["eer_ci"]
        assert lo <= r["eer"] <= hi
    width = lambda r: r["eer_ci"][1] - r["eer_ci"][0]  # noqa: E731
    assert width(big) < 0.6 * width(small)


def test_speaker_bootstrap_is_wider_than_the_trial_count_suggests():
    """Correlated trials of few speakers: the CI must be wider than a binomial one."""
    s, lab, se, st = trials(num_spk=12, per_spk=10, n=20000, noise=0.3)
    r = bootstrap_metrics(s, lab, se, st, num_boot=300, seed=2)
    binomial_halfwidth = 1.96 * np.sqrt(r["eer"] * (1 - r["eer"]) / (lab.sum()))
    assert (r["eer_ci"][1] - r["eer_ci"][0]) / 2 > 2 * binomial_halfwidth


def test_same_seed_same_interval():
    a = bootstrap_metrics(*trials(), num_boot=50, seed=3)
    b = bootstrap_metrics(*trials(), num_boot=50, seed=3)
    assert a == b
    assert format_ci(a).startswith("EER ")


def test_labels_that_disagree_with_speakers_are_an_error():
    s, lab, se, st = trials()
    lab = lab.copy()
    lab[0] = 1 - lab[0]
    with pytest.raises(ValueError, match="trial 0: label"):
        bootstrap_metrics(s, lab, se, st, num_boot=20)


def test_bad_inputs_are_errors():
    s, lab, se, st = trials()
    with pytest.raises(ValueError, match="one of each per trial"):
        bootstrap_metrics(s[:-1], lab, se, st)
    s2 = s.copy()
    s2[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_metrics(s2, lab, se, st)
    with pytest.raises(ValueError, match="num_boot"):
        bootstrap_metrics(s, lab, se, st, num_boot=1)
    with pytest.raises(ValueError, match="both target and nontarget"):
        m = lab == 1
        bootstrap_metrics(s[m], lab[m], se[m], st[m])
