"""AS-norm / S-norm against a straightforward per-trial loop implementation."""

import kaldiio
import numpy as np
import pytest

from wespeaker_lap.io.xvectors import EmbeddingTable
from wespeaker_lap.scoring import arrow_scores
from wespeaker_lap.scoring.score import (
    Trials,
    cosine_score,
    normalize_rows,
    read_scores,
    write_scores,
)
from wespeaker_lap.scoring.score_norm import (
    CohortStats,
    build_cohort,
    cohort_stats,
    normalize_score_files,
    normalize_scores,
    top_k_stats,
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


def test_cohort_stats_normalising_each_chunk_equals_normalising_all_rows_first():
    """The raw table normalised chunk by chunk in the threads gives the same statistics.

    Across chunk sizes within float32 rounding (BLAS may run another kernel for
    another block shape: OpenBLAS's Haswell kernels differ by ~3e-8 between 7 and
    300 rows); across worker counts at one chunk size, bit for bit.
    """
    rng = np.random.default_rng(5)
    raw = (rng.normal(size=(300, 16)) * rng.uniform(0.1, 30, size=(300, 1))).astype(np.float32)
    mean = rng.normal(size=16).astype(np.float32)
    coh = build_cohort(rng.normal(size=(60, 16)))
    want = cohort_stats(normalize_rows(raw, mean), coh, 9, chunk_size=300, workers=1)
    for chunk, workers in ((7, 1), (64, 3), (300, 2)):
        got = cohort_stats(raw, coh, 9, chunk_size=chunk, workers=workers, normalize=True,
                           mean_vec=mean)
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)
    # one chunk size, any number of workers: the same block shapes, the same bits
    one = cohort_stats(raw, coh, 9, chunk_size=64, workers=1, normalize=True, mean_vec=mean)
    three = cohort_stats(raw, coh, 9, chunk_size=64, workers=3, normalize=True, mean_vec=mean)
    np.testing.assert_array_equal(one[0], three[0])
    np.testing.assert_array_equal(one[1], three[1])
    # a wrong normalisation is far outside that tolerance
    off = cohort_stats(raw, coh, 9, chunk_size=64, workers=1, normalize=True, mean_vec=mean * 1.01)
    assert np.abs(off[0] - want[0]).max() > 1e-4
    # normalize_rows works in place on its own copy: the input is left as it was
    before = raw.copy()
    out = normalize_rows(raw, mean)
    np.testing.assert_array_equal(raw, before)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out, (raw - mean) / np.linalg.norm(raw - mean, axis=1,
                                                                   keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="mean vector has dim 3"):
        cohort_stats(raw, coh, 9, normalize=True, mean_vec=mean[:3])


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
    # a top_n beyond the 40-entry cohort would be S-norm named asnorm300: refused, no file
    with pytest.raises(ValueError, match=r"top_n 300 is larger than the cohort \(40 entries\)"):
        normalize_score_files([tmp_path / "vox.score"], tmp_path / "eval.scp",
                              tmp_path / "cohort.scp", tmp_path / "mean_vec.npy", top_n=300)
    assert not (tmp_path / "vox.asnorm300.score").exists()
    (snorm,) = normalize_score_files([tmp_path / "vox.score"], tmp_path / "eval.scp",
                                     tmp_path / "cohort.scp", tmp_path / "mean_vec.npy",
                                     top_n=300, method="snorm")
    assert snorm.name == "vox.snorm.score"


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


# ------------------------------------------------------------------ the fast paths
def _sorted_stats(block, k):
    top = np.sort(block.astype(np.float64), axis=1)[:, -k:]
    return top.mean(axis=1), top.std(axis=1)


def test_top_k_stats_is_exact_including_rows_that_defeat_the_sample():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(64, 4000)).astype(np.float32)
    block[1] = 0.5  # all tied: more than 4 k pass the threshold
    block[2] = 0.0
    block[2, ::8][:57] = 10.0  # only sampled columns are high: fewer than k pass
    block[3] = np.round(block[3], 1)  # many ties at the threshold
    block[4, 1::8] = 5.0  # the k largest all sit in columns the sample skips
    expect = _sorted_stats(block, 300)
    got = top_k_stats(block.copy(), 300)
    np.testing.assert_allclose(got[0], expect[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], expect[1], rtol=0, atol=1e-12)
    # a k too large for the sample, and the whole row (S-norm), take the plain partition
    for k in (1000, 4000):
        np.testing.assert_allclose(top_k_stats(block.copy(), k), _sorted_stats(block, k),
                                   rtol=0, atol=1e-12)


def _large_setup(tmp_path, labels="kaldi"):
    """600 cohort utterances, top 30: large enough for the sampled top-k."""
    rng = np.random.default_rng(5)
    emb = {f"spk{i % 7}-utt{i}": rng.normal(size=16).astype(np.float32) for i in range(80)}
    cohort = {f"c{i}": rng.normal(size=16).astype(np.float32) for i in range(600)}
    for name, table in (("eval", emb), ("cohort", cohort)):
        with kaldiio.WriteHelper(f"ark,scp:{tmp_path / name}.ark,{tmp_path / name}.scp") as w:
            for k, v in table.items():
                w(k, v)
    keys = list(emb)
    trials = Trials([keys[i] for i in rng.integers(0, 80, 500)],
                    [keys[i] for i in rng.integers(0, 80, 500)], rng.integers(0, 2, 500))
    trials, scores = cosine_score(emb, trials)
    return emb, cohort, trials, scores


def _both_paths(monkeypatch, tmp_path, score_file, **kw):
    """normalize_score_files through Arrow and through the Python reader/writer."""
    out = {}
    for name in ("arrow", "python"):
        with monkeypatch.context() as m:
            if name == "python":
                m.setattr(arrow_scores, "pa", None)
            try:
                (path,) = normalize_score_files(
                    [score_file], tmp_path / "eval.scp", tmp_path / "cohort.scp", top_n=30,
                    output_dir=tmp_path / name, **kw)
                out[name] = path.read_bytes()
            except Exception as e:  # the same error either way
                out[name] = (type(e), str(e))
    return out


def test_arrow_score_path_writes_the_same_bytes_as_the_python_path(tmp_path, monkeypatch):
    emb, cohort, trials, scores = _large_setup(tmp_path)
    write_scores(tmp_path / "vox.score", trials, scores)
    used = []
    real = arrow_scores.write_score_columns
    monkeypatch.setattr(arrow_scores, "write_score_columns",
                        lambda *a: used.append(1) or real(*a))
    out = _both_paths(monkeypatch, tmp_path, tmp_path / "vox.score")
    assert used == [1] and isinstance(out["arrow"], bytes)
    assert out["arrow"] == out["python"]
    _, normed = read_scores(tmp_path / "arrow" / "vox.asnorm30.score")
    _, file_scores = read_scores(tmp_path / "vox.score")  # rounded to 6 decimals
    expect = _loop_norm(trials, file_scores, emb, [_unit(v) for v in cohort.values()], 0, 30)
    np.testing.assert_allclose(normed, expect, atol=1e-5)  # float32 product, 6 decimals


@pytest.mark.parametrize("case", [
    "labels_1_0", "unlabeled", "crlf", "tabs", "double_space", "bom", "bad_line", "nan",
    "unknown_label", "unknown_key", "unknown_key_allowed", "blank_lines", "empty", "plain",
])
def test_arrow_score_path_gives_what_the_python_path_gives(case, tmp_path, monkeypatch):
    """Every file the fast reader is unsure of goes to the Python reader: same bytes out,
    or the same error naming file and line."""
    _, _, trials, scores = _large_setup(tmp_path)
    lines = [f"{e} {t} {s:.6f} {'target' if lab else 'nontarget'}"
             for e, t, s, lab in zip(trials.enroll, trials.test, scores, trials.labels,
                                     strict=True)]
    kw = {}
    if case == "labels_1_0":
        lines = [ln.replace("nontarget", "0").replace("target", "1") for ln in lines]
    elif case == "unlabeled":
        lines = [ln.rsplit(" ", 1)[0] for ln in lines]
    elif case == "tabs":
        lines[10] = lines[10].replace(" ", "\t")
    elif case == "double_space":
        lines[10] = lines[10].replace(" ", "  ", 1)
    elif case == "bad_line":
        lines[10] = lines[10].rsplit(" ", 1)[0]
    elif case == "nan":
        lines[10] = lines[10].replace(lines[10].split()[2], "nan")
    elif case == "unknown_label":
        lines[10] = lines[10].rsplit(" ", 1)[0] + " maybe"
    elif case.startswith("unknown_key"):
        lines[10] = "nobody " + lines[10].split(" ", 1)[1]
        kw = {"allow_missing": case.endswith("allowed")}
    elif case == "blank_lines":
        lines[10:10] = ["", "   "]
    elif case == "empty":
        lines = []
    text = "\r\n".join(lines) if case == "crlf" else "\n".join(lines)
    raw = text.encode() + (b"\n" if lines else b"")
    if case == "bom":
        raw = b"\xef\xbb\xbf" + raw
    (tmp_path / "vox.score").write_bytes(raw)
    used = []
    real = arrow_scores.write_score_columns
    monkeypatch.setattr(arrow_scores, "write_score_columns",
                        lambda *a: used.append(1) or real(*a))
    out = _both_paths(monkeypatch, tmp_path, tmp_path / "vox.score", **kw)
    assert out["arrow"] == out["python"]
    assert bool(used) == (case in {"plain", "labels_1_0", "unlabeled", "crlf"})
    failing = {"bad_line", "nan", "unknown_label", "unknown_key", "empty"}
    assert isinstance(out["arrow"], tuple) == (case in failing), out["arrow"]


def test_arrow_score_format_is_percent_6f_byte_for_byte(tmp_path):
    rng = np.random.default_rng(1)
    values = np.concatenate([
        rng.normal(size=5000) * 10.0 ** rng.integers(-8, 9, 5000),
        (np.arange(-50, 50) + 0.5) * 1e-6, [0.0, -0.0, -1e-9, -4.9e-7, 5e-7, -5e-7, 1e14, -1e14],
    ])
    text = arrow_scores.format_scores(values).to_pylist()
    assert text == [f"{v:.6f}" for v in values.tolist()]
    # too large for the decimal cast: the writer declines, and the Python writer is used
    keys = [f"u{i}" for i in range(3)]
    cols = arrow_scores.ScoreColumns(arrow_scores.pa.array(keys), arrow_scores.pa.array(keys),
                                     np.zeros(3), None, "<memory>")
    assert not arrow_scores.write_score_columns(tmp_path / "x", cols, np.array([1.0, 2e15, 3]))
    assert not (tmp_path / "x").exists()


def test_the_as_norm_top_n_default_has_one_home():
    """Every function and CLI that takes ``top_n`` defaults to DEFAULT_TOP_N, so changing it
    changes them all."""
    import inspect

    from wespeaker_lap.bin import calibrate as calibrate_cli
    from wespeaker_lap.bin import score_norm as score_norm_cli
    from wespeaker_lap.scoring import calibration, score_norm

    funcs = [f for mod in (score_norm, calibration) for _, f in inspect.getmembers(mod)
             if (inspect.isfunction(f) or inspect.isclass(f)) and f.__module__ == mod.__name__]
    defaults = {f.__qualname__: inspect.signature(f).parameters["top_n"].default for f in funcs
                if "top_n" in inspect.signature(f).parameters
                and inspect.signature(f).parameters["top_n"].default not in (inspect._empty, None)}
    assert len(defaults) >= 5 and set(defaults.values()) == {score_norm.DEFAULT_TOP_N}, defaults
    assert score_norm_cli.get_parser().parse_args(
        ["--scores", "s"]).top_n == \
        score_norm.DEFAULT_TOP_N
    args = calibrate_cli.get_parser().parse_args(
        ["fit", "--scores", "s", "--model", "m"])
    assert args.top_n == score_norm.DEFAULT_TOP_N
    # the model package and the API take it from there too
    from wespeaker_lap.api.model import SpeakerModel
    from wespeaker_lap.api.packaging import PackageOptions
    from wespeaker_lap.bin import package_model

    assert package_model.get_parser().parse_args(["--exp_dir", "e", "--out", "o"]).top_n == \
        score_norm.DEFAULT_TOP_N
    assert inspect.signature(SpeakerModel).parameters["top_n"].default == \
        score_norm.DEFAULT_TOP_N
    assert PackageOptions.__dataclass_fields__["top_n"].default == score_norm.DEFAULT_TOP_N
