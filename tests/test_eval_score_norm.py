"""AS-norm / S-norm against a straightforward per-trial loop implementation."""

import kaldiio
import numpy as np
import pytest

from wespeaker_lap.io.xvectors import EmbeddingTable
from wespeaker_lap.scoring.score import Trials, cosine_score, read_scores, write_scores
from wespeaker_lap.scoring.score_norm import (
    CohortStats,
    build_cohort,
    cohort_stats,
    normalize_score_files,
    normalize_scores,
)


def _unit(v):
    return v / np.linalg.norm(v)


def _loop_norm(trials, scores, emb, cohort_list, mean, top_n):
    """The AS-norm formula, one trial at a time, in float64 (the vectorised one is float32)."""
    out = []
    for e, t, s in zip(trials.enroll, trials.test, scores, strict=True):
        stats = []
        for key in (e, t):
            x = _unit(emb[key] - mean)
            cs = sorted((float(x @ c) for c in cohort_list), reverse=True)
            top = np.array(cs if top_n is None else cs[:top_n])
            stats.append((top.mean(), top.std()))
        (mu_e, sd_e), (mu_t, sd_t) = stats
        out.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    return np.array(out)


@pytest.fixture
def setup():
    rng = np.random.default_rng(3)
    dim = 12
    emb = {f"u{i}": rng.normal(size=dim).astype(np.float32) for i in range(15)}
    cohort = {f"c{i}": rng.normal(size=dim).astype(np.float32) for i in range(40)}
    mean = rng.normal(size=dim).astype(np.float32) * 0.3
    keys = list(emb)
    trials = Trials([keys[i] for i in rng.integers(0, 15, 30)],
                    [keys[i] for i in rng.integers(0, 15, 30)], rng.integers(0, 2, 30))
    trials, scores = cosine_score(emb, trials, mean)
    return emb, cohort, mean, trials, scores


@pytest.mark.parametrize("top_n", [2, 7, 40])
def test_asnorm_equals_per_trial_loop_with_utterance_cohort(setup, top_n):
    emb, cohort, mean, trials, scores = setup
    cohort_list = [_unit(v - mean) for v in cohort.values()]
    coh = build_cohort(cohort, mean)
    _, normed = normalize_scores(trials, scores, emb, coh, mean, top_n=top_n, chunk_size=4)
    expect = _loop_norm(trials, scores, emb, cohort_list, mean, top_n)
    np.testing.assert_allclose(normed, expect, rtol=1e-4, atol=1e-5)


def test_asnorm_equals_per_trial_loop_with_speaker_mean_cohort(setup):
    emb, cohort, mean, trials, scores = setup
    utt2spk = {k: f"spk{i % 6}" for i, k in enumerate(cohort)}
    spk_vecs = {}
    for utt, spk in utt2spk.items():
        spk_vecs.setdefault(spk, []).append(cohort[utt].astype(np.float64) - mean)
    cohort_list = [_unit(np.mean(v, axis=0)) for v in spk_vecs.values()]
    coh = build_cohort(cohort, mean, utt2spk)
    assert coh.shape == (6, 12)
    _, normed = normalize_scores(trials, scores, emb, coh, mean, top_n=3)
    expect = _loop_norm(trials, scores, emb, cohort_list, mean, 3)
    np.testing.assert_allclose(normed, expect, rtol=1e-4, atol=1e-5)


def test_snorm_uses_the_whole_cohort(setup):
    emb, cohort, mean, trials, scores = setup
    cohort_list = [_unit(v - mean) for v in cohort.values()]
    coh = build_cohort(cohort, mean)
    _, normed = normalize_scores(trials, scores, emb, coh, mean, top_n=5, method="snorm")
    expect = _loop_norm(trials, scores, emb, cohort_list, mean, None)
    np.testing.assert_allclose(normed, expect, rtol=1e-4, atol=1e-5)


def test_cohort_stats_do_not_depend_on_chunk_size():
    rng = np.random.default_rng(0)
    emb = build_cohort(rng.normal(size=(37, 8)))
    coh = build_cohort(rng.normal(size=(50, 8)))
    m1, s1 = cohort_stats(emb, coh, 10, chunk_size=5)
    m2, s2 = cohort_stats(emb, coh, 10, chunk_size=1000)
    np.testing.assert_allclose(m1, m2, atol=1e-7)
    np.testing.assert_allclose(s1, s2, atol=1e-7)
    # chunks shared out to threads land in their own rows
    m3, s3 = cohort_stats(emb, coh, 10, chunk_size=3, workers=4)
    np.testing.assert_allclose(m3, m1, atol=1e-7)
    np.testing.assert_allclose(s3, s1, atol=1e-7)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        cohort_stats(emb, coh, 10, chunk_size=0)


def test_cached_cohort_stats_give_the_same_scores_across_trial_lists(setup):
    emb, cohort, mean, trials, scores = setup
    coh = build_cohort(cohort, mean)
    table = EmbeddingTable.from_dict(emb)
    stats = CohortStats(table, coh, mean, 7)
    first = normalize_scores(trials, scores, table, coh, stats=stats)[1]
    again = normalize_scores(trials, scores, table, coh, stats=stats)[1]
    fresh = normalize_scores(trials, scores, table, coh, mean, top_n=7)[1]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, fresh, atol=1e-12)


def test_normalize_score_files_from_scp_matches_in_memory_result(setup, tmp_path):
    emb, cohort, mean, trials, scores = setup
    for name, table in (("eval", emb), ("cohort", cohort)):
        with kaldiio.WriteHelper(f"ark,scp:{tmp_path / name}.ark,{tmp_path / name}.scp") as w:
            for k, v in table.items():
                w(k, v)
    np.save(tmp_path / "mean_vec.npy", mean)
    write_scores(tmp_path / "vox.score", trials, scores)
    (out,) = normalize_score_files(
        [tmp_path / "vox.score"], tmp_path / "eval.scp", tmp_path / "cohort.scp",
        tmp_path / "mean_vec.npy", top_n=5,
    )
    assert out.name == "vox.asnorm5.score"
    with pytest.raises(ValueError, match="no score files"):
        normalize_score_files([], tmp_path / "eval.scp", tmp_path / "cohort.scp")
    back, normed = read_scores(out)
    assert back.enroll == trials.enroll and back.labels.tolist() == trials.labels.tolist()
    _, file_scores = read_scores(tmp_path / "vox.score")
    expect = normalize_scores(trials, file_scores, emb, build_cohort(cohort, mean), mean, 5)[1]
    np.testing.assert_allclose(normed, expect, atol=1e-6)


def test_score_norm_rejects_nan_scores_and_unknown_method(setup):
    emb, cohort, mean, trials, scores = setup
    coh = build_cohort(cohort, mean)
    bad = scores.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in scores"):
        normalize_scores(trials, bad, emb, coh, mean)
    with pytest.raises(ValueError, match="unknown score normalisation 'znorm'"):
        normalize_scores(trials, scores, emb, coh, mean, method="znorm")
    with pytest.raises(ValueError, match="top_n must be at least 2"):
        normalize_scores(trials, scores, emb, coh, mean, top_n=1)


def test_cohort_utt2spk_naming_missing_embeddings_is_an_error(setup):
    _, cohort, mean, _, _ = setup
    utt2spk = {"c0": "a", "nope": "b"}
    with pytest.raises(KeyError, match="1 of 2 cohort utterances have no embedding"):
        build_cohort(cohort, mean, utt2spk)
    assert build_cohort(cohort, mean, utt2spk, allow_missing=True).shape == (1, 12)
