"""Embedding extraction to Kaldi ark/scp and the wespeaker-lap CLI, on a tiny trained-model dir."""

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from data_helpers import make_tone_data_dir

from wespeaker_lap.bin import extract
from wespeaker_lap.checks import ConfigError
from wespeaker_lap.cli import main as cli
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import save_weights
from wespeaker_lap.io.xvectors import write_xvectors
from wespeaker_lap.models import build_extractor
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir


def read_xvectors(scp):
    """key -> vector of an xvector.scp, as a Kaldi user would read it (kaldiio)."""
    return {k: np.asarray(v) for k, v in kaldiio.load_scp(str(scp)).items()}


def tiny_config(model="LAP_ASTP"):
    model_args = {"embed_dim": 16}
    if model == "LAP_ASTP":
        model_args.update(lap_dim=32, heads=4)
    return {
        "exp_dir": "unused",
        "dataset_args": {"sample_rate": 16000},
        "frontend": "ssl",
        "frontend_args": {"config": tiny_ssl_config("wavlm")},
        "model": model,
        "model_args": model_args,
    }


def make_exp_dir(d, seed=1):
    """An exp_dir as training leaves it: config.yaml + models/avg_model.pt (with a head)."""
    cfg = tiny_config()
    (d / "models").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(seed)
    ext = build_extractor(cfg)
    ext.add_module("projection", torch.nn.Linear(16, 5))  # the training head is dropped
    for p in ext.backend.parameters():  # trained weights differ from a fresh init
        p.data.add_(0.01 * torch.randn_like(p))
    save_weights(ext, d / "models" / "avg_model.pt")
    return d


@pytest.fixture
def model_dir(tmp_path):
    return make_exp_dir(tmp_path / "exp")


@pytest.fixture
def data_dir(tmp_path):
    return make_tone_data_dir(tmp_path / "data")


def test_resolve_model_dir_prefers_the_averaged_model(model_dir):
    cfg, weights = resolve_model_dir(model_dir)
    assert cfg.name == "config.yaml" and weights.name == "avg_model.pt"


def test_model_dir_without_config_or_weights_is_a_clear_error(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        resolve_model_dir(tmp_path)
    (model_dir / "models" / "avg_model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        resolve_model_dir(model_dir)


def test_extract_writes_readable_ark_scp_mean_and_layer_scores(tmp_path, model_dir, data_dir):
    out = tmp_path / "emb"
    rc = extract.main(["--model_dir", str(model_dir), "--data", str(data_dir), "--embed_dir",
                       str(out), "--batch_size", "4", "--num_workers", "0", "--layer_scores",
                       "--no_progress"])
    assert rc == 0
    table = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(out / "xvector.scp")).items()}
    keys = [line.split()[0] for line in (out / "xvector.scp").read_text().splitlines()]
    assert keys == sorted(keys) and len(keys) == 9
    assert all(v.shape == (16,) and v.dtype == np.float32 for v in table.values())
    mean = np.load(out / "mean_vec.npy")
    np.testing.assert_allclose(mean, np.mean([table[k] for k in keys], axis=0), rtol=1e-6)
    scores = np.load(out / "layer_scores.npy")
    assert scores.shape == (4, 3) and np.all((scores > 0) & (scores < 1))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    # each embedding equals the utterance extracted alone (batch independence)
    ext = load_trained_extractor(model_dir / "config.yaml", model_dir / "models/avg_model.pt")
    for key in ("spk0-utt0", "spk2-utt1"):
        x, _ = sf.read(data_dir / "wav" / f"{key}.wav", dtype="float32")
        with torch.no_grad():
            alone = ext(torch.from_numpy(x)[None], torch.tensor([len(x)]))[0].numpy()
        np.testing.assert_allclose(table[key], alone, atol=2e-5, rtol=1e-4)


def test_utts_per_spk_embeds_the_first_utterances_of_each_speaker(tmp_path, model_dir,
                                                                    data_dir):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--model_dir", str(model_dir), "--data", str(data_dir), "--batch_size", "4",
              "--num_workers", "0", "--no_progress"]
    assert extract.main(common + ["--embed_dir", str(full)]) == 0
    assert extract.main(common + ["--embed_dir", str(part), "--utts_per_spk", "2"]) == 0
    a, b = read_xvectors(full / "xvector.scp"), read_xvectors(part / "xvector.scp")
    # the data dir's order (spk0-utt0, spk0-utt1, ...): utterances 0 and 1 of each speaker
    assert sorted(b) == [f"spk{s}-utt{u}" for s in range(3) for u in range(2)]
    for k in b:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=1e-4)
    # its own utt2spk, of the embedded utterances only (an AS-norm cohort's)
    assert (part / "utt2spk").read_text().split("\n")[:-1] == [f"{k} {k.split('-')[0]}"
                                                             for k in sorted(b)]
    np.testing.assert_allclose(np.load(part / "mean_vec.npy"),
                               np.mean([b[k] for k in sorted(b)], axis=0), rtol=1e-5, atol=1e-6)
    # a negative count is refused before the model loads; a list has no speakers to count
    args = extract.build_parser().parse_args(common + ["--embed_dir", str(tmp_path / "x"),
                                                       "--utts_per_spk", "-1"])
    with pytest.raises(ConfigError, match="--utts_per_spk: must be >= 0"):
        extract.check_options(args)
    with pytest.raises(ValueError, match="--utts_per_spk needs --data"):
        extract.eval_source(None, str(tmp_path / "raw.list"), "raw", 2)


def test_extract_uses_the_trained_weights_not_a_fresh_init(tmp_path, model_dir, data_dir):
    cfg, weights = resolve_model_dir(model_dir)
    trained = load_trained_extractor(cfg, weights)
    fresh = load_trained_extractor(cfg, None)
    x = torch.randn(1, 16000)
    with torch.no_grad():
        assert not torch.allclose(trained(x), fresh(x))


def test_interrupted_ark_write_leaves_the_old_files(tmp_path, monkeypatch):
    emb = {"a": np.ones(4, np.float32), "b": np.zeros(4, np.float32)}
    write_xvectors(tmp_path, emb)
    before = (tmp_path / "xvector.scp").read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kaldiio, "save_ark", boom)
    with pytest.raises(KeyboardInterrupt):
        write_xvectors(tmp_path, {"c": np.ones(4, np.float32)})
    assert (tmp_path / "xvector.scp").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xvector.ark", "xvector.scp"]
    assert set(read_xvectors(tmp_path / "xvector.scp")) == {"a", "b"}


def test_extract_reports_a_missing_data_dir(tmp_path, model_dir):
    rc = extract.main(["--model_dir", str(model_dir), "--data", str(tmp_path / "nope"),
                       "--embed_dir", str(tmp_path / "e"), "--no_progress"])
    assert rc == 1


def test_cli_embed_similarity_and_verify(tmp_path, model_dir, data_dir, capsys):
    a, b = str(data_dir / "wav" / "spk0-utt0.wav"), str(data_dir / "wav" / "spk1-utt0.wav")
    assert cli.main(["embed", "--model_dir", str(model_dir), a, b, "--out",
                     str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (2, 16)
    assert (tmp_path / "e.keys").read_text().split() == ["spk0-utt0", "spk1-utt0"]
    capsys.readouterr()
    assert cli.main(["similarity", "--model_dir", str(model_dir), a, b]) == 0
    score = float(capsys.readouterr().out)
    expected = emb[0] @ emb[1] / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1])
    assert score == pytest.approx(expected, abs=1e-5)
    assert cli.main(["verify", "--model_dir", str(model_dir), a, a, "--threshold", "0.99"]) == 0
    assert "same speaker" in capsys.readouterr().out
    assert cli.main(["verify", "--model_dir", str(model_dir), a, b, "--threshold",
                     str(score + 0.01)]) == 0
    assert "different speakers" in capsys.readouterr().out


def test_cli_embed_to_ark_from_wav_scp(tmp_path, model_dir, data_dir):
    assert cli.main(["embed", "--model_dir", str(model_dir), "--wav_scp",
                     str(data_dir / "wav.scp"), "--out", str(tmp_path / "x.ark")]) == 0
    table = read_xvectors(tmp_path / "x.scp")
    assert len(table) == 9 and "spk2-utt2" in table


def test_cli_resamples_other_rates_and_rejects_bad_audio(tmp_path, model_dir, capsys):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "low.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 8000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEjunk")
    assert cli.main(["similarity", "--model_dir", str(model_dir), str(tmp_path / "low.wav"),
                     str(tmp_path / "low.wav")]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(1.0, abs=1e-5)
    for bad in ("silent.wav", "corrupt.wav", "missing.wav"):
        assert cli.main(["similarity", "--model_dir", str(model_dir), str(tmp_path / bad),
                         str(tmp_path / "low.wav")]) == 2
        assert bad in capsys.readouterr().err


def test_a_fine_tuned_ssl_model_is_loaded_from_the_checkpoint(tmp_path):
    """Phase 2/3 checkpoints store the SSL weights: extraction must use them."""
    cfg = tiny_config()
    cfg["frontend_args"] = {**cfg["frontend_args"], "frozen": False}
    d = tmp_path / "exp"
    (d / "models").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    tuned = build_extractor(cfg)
    with torch.no_grad():
        for p in tuned.frontend.model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_weights(tuned, d / "models" / "avg_model.pt")
    assert any(k.startswith("frontend.") for k in torch.load(d / "models" / "avg_model.pt"))

    ext = load_trained_extractor(*resolve_model_dir(d))
    assert ext.frontend.frozen
    x, n = torch.randn(2, 16000), torch.tensor([16000, 12000])
    with torch.no_grad():
        torch.testing.assert_close(ext(x, n), tuned.eval()(x, n))
        assert not torch.allclose(ext(x, n), load_trained_extractor(cfg, None)(x, n))


@pytest.mark.slow
def test_extraction_sharded_over_two_torchrun_ranks_equals_one_process(
        tmp_path, model_dir, data_dir):
    import os
    import subprocess
    import sys

    one = tmp_path / "one"
    assert extract.main(["--model_dir", str(model_dir), "--data", str(data_dir), "--embed_dir",
                         str(one), "--num_workers", "0", "--no_progress"]) == 0
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "wespeaker_lap.bin.extract", "--device", "cpu", "--model_dir", str(model_dir),
         "--data", str(data_dir), "--embed_dir", str(two), "--num_workers", "0",
         "--batch_size", "2", "--no_progress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a, b = read_xvectors(one / "xvector.scp"), read_xvectors(two / "xvector.scp")
    assert list(a) == list(b) == sorted(a) and len(a) == 9
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(np.load(one / "mean_vec.npy"), np.load(two / "mean_vec.npy"),
                               atol=1e-5)
    assert sorted(p.name for p in two.iterdir()) == ["mean_vec.npy", "utt2spk", "xvector.ark",
                                                     "xvector.scp"]
    assert (two / "utt2spk").read_text() == (one / "utt2spk").read_text()


def test_cli_similarity_subtracts_the_mean_vector(tmp_path, model_dir, data_dir, capsys):
    a, b = str(data_dir / "wav" / "spk0-utt0.wav"), str(data_dir / "wav" / "spk1-utt1.wav")
    assert cli.main(["embed", "--model_dir", str(model_dir), a, b, "--out",
                     str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    mean = emb.mean(axis=0) + 0.1
    np.save(tmp_path / "mean.npy", mean)
    capsys.readouterr()
    assert cli.main(["similarity", "--model_dir", str(model_dir), a, b, "--mean_vec",
                     str(tmp_path / "mean.npy")]) == 0
    x, y = emb[0] - mean, emb[1] - mean
    assert float(capsys.readouterr().out) == pytest.approx(
        x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-5)
    np.save(tmp_path / "bad.npy", np.zeros(3, np.float32))
    assert cli.main(["similarity", "--model_dir", str(model_dir), a, b, "--mean_vec",
                     str(tmp_path / "bad.npy")]) == 2
    assert "mean vector has dim 3" in capsys.readouterr().err


def test_layer_score_sums_of_two_ranks_merge_into_the_mean_of_all():
    from wespeaker_lap.models.inference import LayerScoreSum

    scores = torch.rand(4, 2, 5, 3)  # (B, heads, T, L)
    frames = torch.tensor([5, 3, 4, 5])
    whole, a, b = LayerScoreSum(), LayerScoreSum(), LayerScoreSum()
    whole.add(scores, frames)
    a.add(scores[:3], frames[:3])
    b.add(scores[3:], frames[3:])
    empty = LayerScoreSum()
    empty.merge(a)
    empty.merge(LayerScoreSum())  # a rank that collected nothing
    empty.merge(b)
    np.testing.assert_allclose(empty.mean(), whole.mean(), rtol=1e-6)
    assert empty.count == 4
