"""Self-supervised pre-training of the mini recipe's wav2vec 2.0 model."""

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from wespeaker_lap.bin import pretrain_ssl
from wespeaker_lap.frontend import SSLFrontend

TINY = {
    "model_args": {
        "conv_dim": [16] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2], "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4, "num_codevectors_per_group": 8,
        "codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5,
    },
    "train_args": {"steps": 3, "batch_size": 2, "crop_seconds": 0.5, "warmup_steps": 1},
}


@pytest.fixture
def wav_scp(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for i in range(4):
        x = 0.1 * rng.standard_normal(int(16000 * 1.2)).astype(np.float32)
        path = tmp_path / f"u{i}.wav"
        sf.write(path, x, 16000)
        lines.append(f"u{i} {path}\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    return str(tmp_path / "wav.scp")


def test_pretrained_encoder_loads_in_the_frontend(tmp_path, wav_scp):
    out = tmp_path / "ssl"
    history = pretrain_ssl.pretrain(TINY, [wav_scp], str(out), seed=3, max_minutes=None)
    assert len(history) == 3 and all(np.isfinite(history))
    fe = SSLFrontend(out)
    assert fe.num_layers == 3 and fe.hidden_size == 32
    hidden, frames = fe(torch.randn(1, 8000), torch.tensor([8000]))
    assert hidden.shape == (1, 3, 24, 32)


def test_same_seed_gives_the_same_weights(tmp_path, wav_scp):
    for name in ("a", "b"):
        pretrain_ssl.pretrain(TINY, [wav_scp], str(tmp_path / name), seed=5, max_minutes=None)
    a = SSLFrontend(tmp_path / "a").state_dict()
    b = SSLFrontend(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_runs_from_a_yaml_config(tmp_path, wav_scp):
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    pretrain_ssl.main(["--config", str(cfg), "--wav_scp", wav_scp, "--out",
                       str(tmp_path / "ssl"), "--steps", "1"])
    assert (tmp_path / "ssl" / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ssl.")]


def test_unknown_config_keys_are_errors(tmp_path, wav_scp):
    bad = {**TINY, "train_args": {**TINY["train_args"], "stpes": 3}}
    with pytest.raises(ValueError, match="stpes"):
        pretrain_ssl.pretrain(bad, [wav_scp], str(tmp_path / "x"), seed=0, max_minutes=None)
    bad = {**TINY, "model_args": {**TINY["model_args"], "hiden_size": 3}}
    with pytest.raises(ValueError, match="hiden_size"):
        pretrain_ssl.pretrain(bad, [wav_scp], str(tmp_path / "x"), seed=0, max_minutes=None)


def test_wrong_sample_rate_names_the_file(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32) + 0.1, 8000)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\n")
    with pytest.raises(ValueError, match="a.wav.*8000 Hz"):
        pretrain_ssl.load_corpus([str(tmp_path / "wav.scp")], 16000, 0.1)


def test_span_mask_and_negatives_respect_their_contracts():
    rng = np.random.default_rng(0)
    mask = pretrain_ssl.span_mask(rng, 4, 50, 0.5, 10)
    assert mask.shape == (4, 50) and mask.any(1).all() and (~mask).sum(1).min() >= 2
    neg = pretrain_ssl.sample_negatives(rng, mask, 7)
    for b in range(4):
        for t in np.flatnonzero(mask[b]):
            drawn = neg[b, t] - b * 50
            assert mask[b, drawn].all()  # negatives are masked frames of the same utterance
            assert (drawn != t).all()  # never the positive itself


def test_zero_steps_saves_the_seeded_random_initialisation(tmp_path, wav_scp):
    cfg = {**TINY, "train_args": {**TINY["train_args"], "steps": 0}}
    assert pretrain_ssl.pretrain(cfg, [wav_scp], str(tmp_path / "a"), 4, None) == []
    pretrain_ssl.pretrain(cfg, [wav_scp], str(tmp_path / "b"), 4, None)
    a = SSLFrontend(tmp_path / "a").state_dict()
    b = SSLFrontend(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_audio_is_skipped_by_the_pipelines_rules(tmp_path, caplog):
    good = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    sf.write(tmp_path / "good.wav", good, 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "short.wav", good[:4000], 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFFjunk")
    (tmp_path / "wav.scp").write_text("".join(
        f"{k} {tmp_path / k}.wav\n" for k in ("good", "silent", "short", "broken")))
    wavs = pretrain_ssl.load_corpus([str(tmp_path / "wav.scp")], 16000, 0.5)
    assert len(wavs) == 1 and np.allclose(wavs[0], good, atol=1e-4)  # 16-bit wav
    for name in ("silent", "short", "broken"):
        assert name in caplog.text
    assert "(3 skipped)" in caplog.text
