"""QMF calibration: logistic regression, quality features, save/load, held-out improvement."""

import json

import numpy as np
import pytest

from wespeaker_lap.io.xvectors import EmbeddingTable
from wespeaker_lap.scoring.calibration import (
    QMFCalibrator,
    fit_logistic_regression,
    trial_features,
)
from wespeaker_lap.scoring.metrics import compute_cllr, compute_eer
from wespeaker_lap.scoring.score import MissingEmbeddingError, Trials
from wespeaker_lap.scoring.score_norm import CohortStats, build_cohort, cohort_stats


def _synthetic_trials(n_utts, n_trials, seed):
    """Trials whose raw score drifts with both log durations (the confound QMF removes)."""
    rng = np.random.default_rng(seed)
    durations = {f"u{i}": float(rng.uniform(1.0, 20.0)) for i in range(n_utts)}
    keys = list(durations)
    enroll = [keys[i] for i in rng.integers(0, n_utts, n_trials)]
    test = [keys[i] for i in rng.integers(0, n_utts, n_trials)]
    labels = (rng.random(n_trials) < 0.3).astype(np.int8)
    log_d = np.log([durations[e] for e in enroll]) + np.log([durations[t] for t in test])
    scores = 0.3 * labels + 0.1 * log_d + rng.normal(0, 0.08, n_trials)
    return Trials(enroll, test, labels), scores, durations


def test_qmf_with_durations_lowers_cllr_on_held_out_trials():
    cal, cal_scores, cal_durs = _synthetic_trials(400, 4000, seed=0)
    ev, ev_scores, ev_durs = _synthetic_trials(400, 4000, seed=1)
    qmf = ["score", "log_dur_enroll", "log_dur_test"]
    _, x_cal = trial_features(cal, cal_scores, qmf, durations=cal_durs)
    _, x_ev = trial_features(ev, ev_scores, qmf, durations=ev_durs)
    score_only = QMFCalibrator.fit(x_cal[:, :1], cal.labels, ["score"])
    with_quality = QMFCalibrator.fit(x_cal, cal.labels, qmf)
    raw = compute_cllr(ev_scores, ev.labels)
    linear = compute_cllr(score_only.llr(x_ev[:, :1]), ev.labels)
    full = compute_cllr(with_quality.llr(x_ev), ev.labels)
    assert linear < raw
    assert full < linear - 0.1, (raw, linear, full)
    # removing the duration drift also improves discrimination
    assert compute_eer(with_quality.llr(x_ev), ev.labels)[0] < compute_eer(ev_scores, ev.labels)[0]


def test_prior_weighted_regression_recovers_the_true_llr_on_imbalanced_data():
    # targets ~ N(2, 1), nontargets ~ N(0, 1): LLR(x) = 2 x - 2, whatever the class ratio
    rng = np.random.default_rng(0)
    y = rng.random(40000) < 0.1
    x = (rng.normal(size=y.size) + 2.0 * y)[:, None]
    w, b = fit_logistic_regression(x, y, p_target=0.5, l2=0.0)
    assert w[0] == pytest.approx(2.0, abs=0.1)
    assert b == pytest.approx(-2.0, abs=0.1)


def test_qmf_model_saves_and_loads_to_the_same_llrs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=300)) > 0
    names = ["score", "norm_enroll", "norm_test"]
    model = QMFCalibrator.fit(x, y, names, top_n=None)
    model.save(tmp_path / "qmf.json")
    saved = json.loads((tmp_path / "qmf.json").read_text())
    assert saved["features"] == names and saved["format"] == "wespeaker_lap.qmf"
    back = QMFCalibrator.load(tmp_path / "qmf.json")
    np.testing.assert_array_equal(back.llr(x), model.llr(x))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a QMF model"):
        QMFCalibrator.load(tmp_path / "bad.json")


def test_trial_features_are_score_log_durations_raw_norms_and_cohort_means():
    rng = np.random.default_rng(0)
    emb = {f"u{i}": rng.normal(size=6).astype(np.float32) * (i + 1) for i in range(4)}
    table = EmbeddingTable.from_dict(emb)
    mean = np.full(6, 0.2, dtype=np.float32)
    coh = build_cohort(rng.normal(size=(20, 6)), mean)
    stats = CohortStats(table, coh, mean, top_n=5)
    trials = Trials(["u0", "u1"], ["u2", "u3"], np.array([1, 0]))
    durs = {"u0": 2.0, "u1": 3.0, "u2": 4.0, "u3": 5.0}
    names = ["score", "log_dur_enroll", "log_dur_test", "norm_enroll", "norm_test",
             "cohort_mean_enroll", "cohort_mean_test"]
    _, x = trial_features(trials, np.array([0.5, -0.1]), names, table, durs, stats)
    mu, _ = cohort_stats(
        (lambda m: m / np.linalg.norm(m, axis=1, keepdims=True))(table.matrix - mean), coh, 5
    )
    np.testing.assert_allclose(x[:, 0], [0.5, -0.1])
    np.testing.assert_allclose(x[:, 1], np.log([2.0, 3.0]))
    np.testing.assert_allclose(x[:, 2], np.log([4.0, 5.0]))
    np.testing.assert_allclose(x[:, 3], np.linalg.norm(table.matrix[[0, 1]], axis=1), rtol=1e-6)
    np.testing.assert_allclose(x[:, 4], np.linalg.norm(table.matrix[[2, 3]], axis=1), rtol=1e-6)
    np.testing.assert_allclose(x[:, 5], mu[[0, 1]], atol=1e-6)
    np.testing.assert_allclose(x[:, 6], mu[[2, 3]], atol=1e-6)


def test_trial_features_reject_missing_durations_and_unknown_features():
    trials = Trials(["a", "b"], ["c", "d"], np.array([1, 0]))
    durs = {"a": 1.0, "b": 2.0, "c": 3.0}
    with pytest.raises(MissingEmbeddingError, match=r"1 of 2 trials .* first: d"):
        trial_features(trials, np.zeros(2), ["score", "log_dur_test"], durations=durs)
    kept, x = trial_features(trials, np.zeros(2), ["score", "log_dur_test"], durations=durs,
                             allow_missing=True)
    assert kept.enroll == ["a"] and x.shape == (1, 2)
    with pytest.raises(ValueError, match="unknown QMF features"):
        trial_features(trials, np.zeros(2), ["score", "snr"])
    with pytest.raises(ValueError, match="need durations"):
        trial_features(trials, np.zeros(2), ["log_dur_enroll"])
