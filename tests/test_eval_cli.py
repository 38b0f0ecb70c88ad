"""Entry points end to end on a tiny synthetic set: score -> AS-norm -> QMF -> metrics, plots."""

import json

import kaldiio
import numpy as np
import pytest

from wespeaker_lap.bin import calibrate, compute_metrics, plot_layers, score, score_norm


def _write_scp(path, table):
    with kaldiio.WriteHelper(f"ark,scp:{path.with_suffix('.ark')},{path}") as w:
        for k, v in table.items():
            w(k, v)


@pytest.fixture
def workdir(tmp_path):
    """10 speakers x 6 utterances, a 30-utterance cohort, two trial lists, utt2dur."""
    rng = np.random.default_rng(0)
    dim = 16
    centers = rng.normal(size=(10, dim))
    emb = {}
    for s in range(10):
        for u in range(6):
            vec = centers[s] + 0.8 * rng.normal(size=dim)
            emb[f"id{s:02d}/u{u}.wav"] = vec.astype(np.float32)
    cohort = {f"c{i:02d}": rng.normal(size=dim).astype(np.float32) for i in range(30)}
    _write_scp(tmp_path / "eval.scp", emb)
    _write_scp(tmp_path / "cohort.scp", cohort)
    (tmp_path / "cohort_utt2spk").write_text(
        "".join(f"{k} s{i % 10}\n" for i, k in enumerate(cohort))
    )
    np.save(tmp_path / "mean_vec.npy", np.mean(list(emb.values()), axis=0))
    (tmp_path / "utt2dur").write_text(
        "".join(f"{k} {rng.uniform(2, 10):.2f}\n" for k in emb)
    )
    keys = list(emb)
    pairs = [(keys[i], keys[j]) for i in range(0, 60, 2) for j in range(1, 60, 3)]
    kaldi = "".join(
        f"{e} {t} {'target' if e[:4] == t[:4] else 'nontarget'}\n" for e, t in pairs[::2]
    )
    vox = "".join(f"{int(e[:4] == t[:4])} {e} {t}\n" for e, t in pairs[1::2])
    (tmp_path / "cal.kaldi").write_text(kaldi)
    (tmp_path / "test.txt").write_text(vox)
    return tmp_path


def test_pipeline_from_scores_to_metrics_runs_through_all_entry_points(workdir, capsys):
    d = workdir
    assert score.main([
        "--embeddings", str(d / "eval.scp"), "--mean-vec", str(d / "mean_vec.npy"),
        "--trials", str(d / "cal.kaldi"), str(d / "test.txt"), "--output-dir", str(d / "scores"),
    ]) == 0
    raw = [d / "scores/cal.kaldi.score", d / "scores/test.txt.score"]
    assert all(p.is_file() for p in raw)
    first = raw[1].read_text().split("\n", 1)[0].split()
    assert len(first) == 4 and first[3] in ("target", "nontarget")

    assert score_norm.main([
        "--scores", *map(str, raw), "--embeddings", str(d / "eval.scp"),
        "--cohort-embeddings", str(d / "cohort.scp"), "--cohort-utt2spk", str(d / "cohort_utt2spk"),
        "--mean-vec", str(d / "mean_vec.npy"), "--top-n", "4",
    ]) == 0
    normed = [d / "scores/cal.kaldi.asnorm4.score", d / "scores/test.txt.asnorm4.score"]
    assert all(p.is_file() for p in normed)

    sources = [
        "--embeddings", str(d / "eval.scp"), "--utt2dur", str(d / "utt2dur"),
        "--cohort-embeddings", str(d / "cohort.scp"), "--cohort-utt2spk", str(d / "cohort_utt2spk"),
        "--mean-vec", str(d / "mean_vec.npy"),
    ]
    assert calibrate.main(
        ["fit", "--scores", str(normed[0]), "--model", str(d / "qmf.json"), "--top-n", "4",
         *sources]
    ) == 0
    model = json.loads((d / "qmf.json").read_text())
    assert model["top_n"] == 4 and len(model["weights"]) == 7
    assert calibrate.main(
        ["apply", "--model", str(d / "qmf.json"), "--scores", str(normed[1]), *sources]
    ) == 0
    qmf = d / "scores/test.txt.asnorm4.qmf.score"
    assert qmf.is_file()

    capsys.readouterr()
    assert compute_metrics.main(
        [str(raw[1]), str(normed[1]), str(qmf), "--det-png", str(d / "det.png"),
         "--json", str(d / "metrics.json")]
    ) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("EER = " in ln and "minDCF(p=0.05)" in ln for ln in lines)
    assert (d / "det.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((d / "metrics.json").read_text())
    assert set(metrics) == {str(raw[1]), str(normed[1]), str(qmf)}


def test_entry_points_fail_with_file_and_line_on_bad_trials(workdir, capsys):
    d = workdir
    (d / "bad").write_text("id00/u0.wav id00/u1.wav target\nid00/u0.wav id01/u1.wav same\n")
    args = ["--embeddings", str(d / "eval.scp"), "--output-dir", str(d / "s")]
    assert score.main([*args, "--trials", str(d / "bad")]) == 1
    assert "bad:2: unknown trial label 'same'" in capsys.readouterr().err
    (d / "missing").write_text("id00/u0.wav ghost.wav target\nid00/u0.wav id01/u1.wav nontarget\n")
    assert score.main([*args, "--trials", str(d / "missing")]) == 1
    assert "1 of 2 trials" in capsys.readouterr().err
    assert score.main([*args, "--trials", str(d / "missing"), "--allow-missing"]) == 0
    assert len((d / "s/missing.score").read_text().splitlines()) == 1
    (d / "empty").write_text("")
    assert score.main([*args, "--trials", str(d / "empty")]) == 1
    assert "empty trial list" in capsys.readouterr().err
    (d / "nan.score").write_text("a b nan target\n")
    assert compute_metrics.main([str(d / "nan.score")]) == 1
    assert "nan.score:1: non-finite score" in capsys.readouterr().err


def test_plot_layers_writes_png_from_npy_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "lap.npy", rng.random((5, 4, 13)))  # (utterances, heads, L)
    np.save(tmp_path / "superb.npy", rng.normal(size=13))
    assert plot_layers.main([
        "--lap-scores", str(tmp_path / "lap.npy"), "--superb-weights", str(tmp_path / "superb.npy"),
        "--superb-logits", "--out", str(tmp_path / "layers.png"),
    ]) == 0
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"
    np.save(tmp_path / "short.npy", np.ones(12))
    assert plot_layers.main([
        "--lap-scores", str(tmp_path / "lap.npy"), "--superb-weights", str(tmp_path / "short.npy"),
        "--out", str(tmp_path / "x.png"),
    ]) == 1
    assert not (tmp_path / "x.png").exists()


def test_plot_functions_take_arrays_and_reject_mismatched_layers(tmp_path):
    from wespeaker_lap.scoring.metrics import det_curve
    from wespeaker_lap.scoring.plotting import plot_det_curves, plot_layer_attention

    rng = np.random.default_rng(0)
    plot_layer_attention(rng.random((16, 25)), None, tmp_path / "heads_only.png")
    assert (tmp_path / "heads_only.png").stat().st_size > 0
    with pytest.raises(ValueError, match="superb_weights has 12 layers but lap_scores has 13"):
        plot_layer_attention(rng.random((4, 13)), np.ones(12) / 12, tmp_path / "bad.png")
    labels = rng.random(500) < 0.2
    p_miss, p_fa, _ = det_curve(rng.normal(size=500) + 2 * labels, labels)
    plot_det_curves({"sys": (p_miss, p_fa)}, tmp_path / "det.png", title="DET")
    assert (tmp_path / "det.png").read_bytes()[:4] == b"\x89PNG"


def test_score_norm_turns_numpy_hugepage_advice_off_while_it_runs(workdir, monkeypatch):
    multiarray = pytest.importorskip("numpy._core.multiarray")
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    if setter is None:
        pytest.skip("this numpy has no huge-page switch")

    def flag():
        previous = setter(False)
        setter(previous)
        return previous

    seen = []
    real = score_norm.normalize_score_files

    def spy(*args, **kwargs):
        seen.append(flag())
        return real(*args, **kwargs)

    monkeypatch.setattr(score_norm, "normalize_score_files", spy)
    d = workdir
    assert score.main(["--embeddings", str(d / "eval.scp"), "--trials", str(d / "cal.kaldi"),
                       "--output-dir", str(d / "scores")]) == 0
    argv = ["--scores", str(d / "scores/cal.kaldi.score"), "--embeddings", str(d / "eval.scp"),
            "--cohort-embeddings", str(d / "cohort.scp"), "--top-n", "4"]
    before = setter(True)
    try:
        monkeypatch.delenv(score_norm.HUGEPAGE_ENV, raising=False)
        assert score_norm.main(argv) == 0
        assert seen == [False] and flag() is True  # off while it ran, restored after
        monkeypatch.setenv(score_norm.HUGEPAGE_ENV, "1")  # numpy's own switch wins
        assert score_norm.main(argv) == 0
        assert seen == [False, True]
    finally:
        setter(before)
