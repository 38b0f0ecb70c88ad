"""HuBERT-style pre-training (wespeaker_lap.pretrain, bin/pretrain_ssl) on tiny models."""

import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from wespeaker_lap.bin import pretrain_ssl
from wespeaker_lap.checks import ConfigError
from wespeaker_lap.frontend import SSLFrontend
from wespeaker_lap.pretrain import features, hubert, kmeans, schema

TINY_MODEL = {
    "conv_dim": [16] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


def tiny(steps=3, **train):
    return {"model_args": dict(TINY_MODEL),
            "train_args": {"steps": steps, "batch_size": 2, "crop_seconds": 0.5,
                           "warmup_steps": 1, "num_units": 4, "log_every": 1, **train}}


def tone_utterance(rng, seconds=1.5, sr=16000):
    """Piecewise-constant tones (0.3-0.6 s each) from 6 frequencies: units a model can
    predict from the visible context around a masked span."""
    out, n = [], int(seconds * sr)
    while sum(len(x) for x in out) < n:
        f = rng.choice([200.0, 350.0, 600.0, 1000.0, 1700.0, 2900.0])
        t = np.arange(int(rng.uniform(0.3, 0.6) * sr)) / sr
        out.append(0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)))
    x = np.concatenate(out)[:n]
    return (x + 0.003 * rng.standard_normal(n)).astype(np.float32)


def write_scp(tmp_path, wavs, name="wav.scp"):
    lines = []
    for i, x in enumerate(wavs):
        path = tmp_path / f"u{i:03d}.wav"
        sf.write(path, x, 16000)
        lines.append(f"u{i:03d} {path}\n")
    (tmp_path / name).write_text("".join(lines))
    return str(tmp_path / name)


@pytest.fixture
def wav_scp(tmp_path):
    rng = np.random.default_rng(1)
    return write_scp(tmp_path, [tone_utterance(rng, 1.2) for _ in range(6)])


def test_mfcc_frames_align_with_the_cnn_frames():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    f = features.mfcc_deltas(x)
    assert f.shape == (features.num_frames(16000), 39) == (49, 39)
    fe = SSLFrontend(None, config={"model_type": "hubert", **TINY_MODEL})
    assert int(fe.frame_lengths(torch.tensor([16000]))[0]) == 49
    assert np.allclose(f.mean(0), 0, atol=1e-4)  # per-utterance CMVN


def test_deltas_of_a_ramp_are_its_slope():
    x = np.arange(20, dtype=np.float64)[:, None] * 3.0
    d = features.add_deltas(x, order=2)
    assert d.shape == (20, 3)
    assert np.allclose(d[2:-2, 1], 3.0) and np.allclose(d[4:-4, 2], 0.0)


def test_span_mask_masks_about_half_in_spans():
    rng = np.random.default_rng(0)
    m = hubert.span_mask(rng, 64, 99, 0.8, 10)
    assert 0.4 < m.mean() < 0.65
    assert m.any(axis=1).all() and (~m).any(axis=1).all()


def test_loss_falls_and_masked_accuracy_beats_chance_on_tones(tmp_path):
    rng = np.random.default_rng(2)
    scp = write_scp(tmp_path, [tone_utterance(rng) for _ in range(12)])
    cfg = tiny(steps=60, num_units=6, batch_size=8, crop_seconds=1.0, lr=3e-3,
               warmup_steps=5, log_every=20)
    hist = pretrain_ssl.pretrain(cfg, [scp], str(tmp_path / "ssl"), seed=0)
    assert len(hist.step) == 60
    assert hist.mean("loss", False, 10) < hist.mean("loss", True, 10) - 0.2
    assert hist.mean("acc", False, 10) > 2 * hist.chance_acc
    log = (tmp_path / "ssl" / "pretrain_log.tsv").read_text()
    assert "chance: loss ln K = 1.7918" in log
    assert (tmp_path / "ssl" / "pretrain_curve.png").stat().st_size > 1000
    assert np.load(tmp_path / "ssl" / "units.npy").shape == (6, 39)


def test_pretrained_encoder_loads_in_the_frontend(tmp_path, wav_scp):
    out = tmp_path / "ssl"
    hist = pretrain_ssl.pretrain(tiny(), [wav_scp], str(out), seed=3)
    assert len(hist.step) == 3 and np.isfinite(hist.loss).all()
    fe = SSLFrontend(out)
    assert fe.num_layers == 3 and fe.hidden_size == 32
    hidden, frames = fe(torch.randn(1, 8000), torch.tensor([8000]))
    assert hidden.shape == (1, 3, 24, 32) and int(frames[0]) == 24
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left


def test_same_seed_gives_the_same_weights(tmp_path, wav_scp):
    for name in ("a", "b"):
        pretrain_ssl.pretrain(tiny(), [wav_scp], str(tmp_path / name), seed=5)
    a = SSLFrontend(tmp_path / "a").state_dict()
    b = SSLFrontend(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_iteration_two_clusters_a_layer_of_the_first_model(tmp_path, wav_scp):
    pretrain_ssl.pretrain(tiny(), [wav_scp], str(tmp_path / "it1"), seed=0)
    cfg = tiny(units_from=str(tmp_path / "it1"), units_layer=1)
    pretrain_ssl.pretrain(cfg, [wav_scp], str(tmp_path / "it2"), seed=0)
    assert np.load(tmp_path / "it2" / "units.npy").shape == (4, 32)  # hidden size, not 39
    with pytest.raises(ValueError, match="units_layer 7 out of range"):
        pretrain_ssl.pretrain(tiny(units_from=str(tmp_path / "it1"), units_layer=7),
                              [wav_scp], str(tmp_path / "it3"), seed=0)


def test_cli_runs_from_a_yaml_config_and_reruns_cleanly(tmp_path, wav_scp):
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "ssl"
    (tmp_path / ".ssl.abc123").mkdir()  # what an interrupted run leaves
    (tmp_path / ".ssl.abc123" / "config.json").write_text("{")
    argv = ["--config", str(cfg), "--wav_scp", wav_scp, "--out", str(out), "--steps", "1"]
    assert pretrain_ssl.main(argv) == 0
    assert not (tmp_path / ".ssl.abc123").exists()
    assert (out / "config.json").is_file() and (out / "preprocessor_config.json").is_file()
    ran = yaml.safe_load((out / "pretrain.yaml").read_text())
    assert ran["train_args"]["steps"] == 1 and "--steps 1" in ran["command"]
    assert pretrain_ssl.main(argv) == 0  # a re-run replaces the old model whole
    SSLFrontend(out)


def test_steps_scale_multiplies_the_configs_or_the_given_steps(tmp_path, wav_scp):
    """--steps_scale N (the mini recipe's --scale): N x the steps, recorded as run."""
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(yaml.safe_dump(tiny(steps=1)))
    base = ["--config", str(cfg), "--wav_scp", wav_scp]
    assert pretrain_ssl.main([*base, "--out", str(tmp_path / "a"), "--steps_scale", "2"]) == 0
    ran = yaml.safe_load((tmp_path / "a" / "pretrain.yaml").read_text())
    assert ran["train_args"]["steps"] == 2
    with pytest.raises(SystemExit, match="--steps_scale must be >= 1, got 0"):
        pretrain_ssl.main([*base, "--out", str(tmp_path / "b"), "--steps", "3",
                           "--steps_scale", "0"])
    assert not (tmp_path / "b").exists()


def test_negative_steps_is_an_error(tmp_path, wav_scp):
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(yaml.safe_dump(tiny()))
    with pytest.raises(SystemExit, match="--steps must be >= 0"):
        pretrain_ssl.main(["--config", str(cfg), "--wav_scp", wav_scp, "--out",
                           str(tmp_path / "x"), "--steps", "-1"])
    with pytest.raises(ValueError, match="steps must be >= 0"):
        pretrain_ssl.pretrain(tiny(steps=-1), [wav_scp], str(tmp_path / "x"), 0)
    assert not (tmp_path / "x").exists()


def test_zero_steps_saves_the_seeded_random_init_without_reading_audio(tmp_path):
    missing = tmp_path / "missing.scp"  # never opened
    pretrain_ssl.pretrain(tiny(steps=0), [str(missing)], str(tmp_path / "a"), 4)
    pretrain_ssl.pretrain(tiny(steps=0), [str(missing)], str(tmp_path / "b"), 4)
    a, b = SSLFrontend(tmp_path / "a").state_dict(), SSLFrontend(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unmasked_weight_adds_the_unmasked_frames_loss(tmp_path, wav_scp):
    with pytest.raises(ValueError, match="unmasked_weight must be in \\[0, 1\\]"):
        schema.parse_train_args({"unmasked_weight": 1.5})
    outs = {}
    for w in (0.0, 1.0):
        hist = pretrain_ssl.pretrain(tiny(steps=2, unmasked_weight=w), [wav_scp],
                                     str(tmp_path / f"w{w}"), seed=0)
        outs[w] = (hist, SSLFrontend(tmp_path / f"w{w}").state_dict())
    # the logged loss is the masked frames' loss either way: the first step (before any
    # update) logs the same number; the update differs once the unmasked loss joins
    assert outs[0.0][0].loss[0] == pytest.approx(outs[1.0][0].loss[0])
    a, b = outs[0.0][1], outs[1.0][1]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_unknown_keys_are_errors(tmp_path, wav_scp):
    bad = tiny()
    bad["train_args"]["stpes"] = 3
    with pytest.raises(ValueError, match="unknown train_args \\['stpes'\\]"):
        pretrain_ssl.pretrain(bad, [wav_scp], str(tmp_path / "x"), 0)
    bad = tiny()
    bad["model_args"]["hiden_size"] = 3
    with pytest.raises(ValueError, match="unknown HubertConfig field"):
        pretrain_ssl.pretrain(bad, [wav_scp], str(tmp_path / "x"), 0)


def test_unreadable_and_short_files_are_skipped_and_counted(tmp_path, caplog):
    rng = np.random.default_rng(0)
    scp = write_scp(tmp_path, [tone_utterance(rng, 1.2), tone_utterance(rng, 0.3)])
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with open(scp, "a") as f:
        f.write(f"z_bad {tmp_path / 'bad.wav'}\nz_gone {tmp_path / 'gone.wav'}\n")
    with caplog.at_level("INFO"):
        corpus = features.load_corpus([scp], min_seconds=1.0)
    assert corpus.keys == ["u000"] and corpus.skipped == 3
    assert "3 skipped" in caplog.text


def test_a_corpus_with_no_usable_audio_is_an_error(tmp_path):
    scp = write_scp(tmp_path, [np.zeros(16000, dtype=np.float32)])
    with pytest.raises(ValueError, match="no usable audio"):
        features.load_corpus([scp])


def test_too_few_frames_for_the_clusters_is_a_clear_error(tmp_path, wav_scp):
    with pytest.raises(kmeans.TooFewFrames, match="too few for 500 clusters"):
        pretrain_ssl.pretrain(tiny(num_units=500), [wav_scp], str(tmp_path / "x"), 0)
    assert not (tmp_path / "x").exists()


def test_no_speaker_label_reaches_pretraining(tmp_path, wav_scp):
    """The corpus is read from wav.scp alone: an utt2spk beside it changes nothing."""
    pretrain_ssl.pretrain(tiny(), [wav_scp], str(tmp_path / "a"), seed=1)
    (tmp_path / "utt2spk").write_text("".join(f"u{i:03d} s{i % 2}\n" for i in range(6)))
    (tmp_path / "spk2utt").write_text("s0 u000\n")
    pretrain_ssl.pretrain(tiny(), [wav_scp], str(tmp_path / "b"), seed=1)
    a, b = SSLFrontend(tmp_path / "a").state_dict(), SSLFrontend(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_conf_ssl_configs_build(tmp_path):
    from pathlib import Path

    for p in sorted((Path(__file__).parents[1] / "conf").glob("ssl_*mini*.yaml")):
        cfg = yaml.safe_load(p.read_text())
        t = schema.parse_train_args(cfg["train_args"])
        m = hubert.HubertPretrainModel(hubert.build_config(cfg["model_args"]),
                                       t.num_units, t.proj_dim, t.temperature)
        assert m.hubert.config.conv_stride == [5, 2, 2, 2, 2, 2, 2], p  # 20 ms frames


def test_nt_xent_rewards_picking_the_partner_crop():
    u = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    pairs = torch.repeat_interleave(u, 2, dim=0)  # rows 2i and 2i+1 identical
    loss_pairs, acc_pairs = hubert.nt_xent(pairs, 0.1)
    shuffled = pairs[torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])]  # partners no longer adjacent
    loss_shuf, acc_shuf = hubert.nt_xent(shuffled, 0.1)
    assert float(acc_pairs) == 1.0 and float(acc_shuf) == 0.0
    assert float(loss_pairs) < float(loss_shuf)


def test_pairs_are_two_crops_of_one_utterance(wav_scp):
    corpus = features.load_corpus([wav_scp])
    units = [np.arange(features.num_frames(len(w))) % 4 for w in corpus.wavs]
    wavs, labels = hubert.sample_batch(corpus, units, np.random.default_rng(0), 6, 8000,
                                       pairs=True)
    # each crop is a slice of some utterance; rows 2i and 2i+1 come from the same one
    audio = [corpus.audio(i) for i in range(len(corpus.wavs))]

    def source(row):
        x = wavs[row].numpy()
        return next(i for i, a in enumerate(audio)
                    if any(np.array_equal(a[s:s + len(x)], x)
                           for s in range(0, len(a) - len(x) + 1, features.HOP_SAMPLES)))

    src = [source(r) for r in range(6)]
    assert src[0::2] == src[1::2]
    noisy = hubert.gain_and_noise(wavs, np.random.default_rng(0), (20.0, 20.0), gain_db=0.0)
    snr = 10 * torch.log10(wavs.pow(2).mean(1) / (noisy - wavs).pow(2).mean(1))
    assert torch.allclose(snr, torch.full_like(snr, 20.0), atol=0.5)


def test_contrast_weight_trains_the_utterance_head_and_saves_a_plain_model(tmp_path, wav_scp,
                                                                          caplog):
    with pytest.raises(ValueError, match="batch_size must be even and >= 4"):
        schema.parse_train_args({"contrast_weight": 1.0, "batch_size": 3})
    with pytest.raises(ValueError, match="contrast_snr_db must be"):
        schema.parse_train_args({"contrast_weight": 1.0, "contrast_snr_db": 20})
    caplog.set_level("INFO")
    cfg = tiny(steps=2, batch_size=4, contrast_weight=1.0)
    pretrain_ssl.pretrain(cfg, [wav_scp], str(tmp_path / "c"), seed=0)
    assert "utterance contrast loss" in caplog.text and "partner acc" in caplog.text
    tsv = (tmp_path / "c" / "pretrain_log.tsv").read_text().splitlines()
    assert tsv[1].endswith("contrast_loss\tpartner_acc") and len(tsv[2].split("\t")) == 6
    assert (tmp_path / "c" / "pretrain_curve.png").stat().st_size > 0
    fe = SSLFrontend(tmp_path / "c")  # the head is dropped: a standard HubertModel
    assert not any("utt_proj" in k for k in fe.state_dict())
    pretrain_ssl.pretrain(tiny(steps=2, batch_size=4), [wav_scp], str(tmp_path / "p"), seed=0)
    a, b = fe.state_dict(), SSLFrontend(tmp_path / "p").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("key, value, needle", [
    ("steps", "100", "train_args.steps: expected an int, got '100'"),
    ("steps", 10.0, "train_args.steps: expected an int"),
    ("lr", "fast", "train_args.lr: expected a number"),
    ("mask_prob", 0, r"train_args.mask_prob must be in \(0, 1\], got 0"),
    ("num_units", 1, "train_args.num_units must be >= 2"),
    ("units_from", 3, "train_args.units_from: expected a string"),
    ("unmasked_weight", True, "train_args.unmasked_weight: expected a number"),
    ("contrast_snr_db", [30, 10], "train_args.contrast_snr_db must be"),
    ("stpes", 3, r"unknown train_args \['stpes'\] \(did you mean 'steps'\?\)"),
])
def test_train_args_errors_name_the_key_and_the_file(tmp_path, wav_scp, capsys, key, value,
                                                     needle):
    cfg = tiny()
    cfg["train_args"][key] = value
    path = tmp_path / "ssl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ssl"
    rc = pretrain_ssl.main(["--config", str(path), "--wav_scp", wav_scp, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert re.search(f"ERROR .*: {re.escape(str(path))}: {needle}", err), err
    assert not out.exists() and "HuBERT encoder" not in err  # refused before any work
    with pytest.raises(ConfigError, match=needle):
        schema.parse_train_args(cfg["train_args"])


def test_train_args_are_typed_with_defaults_and_ints_become_floats():
    args = schema.parse_train_args({"crop_seconds": 1, "grad_clip": 2, "contrast_snr_db": [5, 9]})
    assert args.crop_seconds == 1.0 and isinstance(args.crop_seconds, float)
    assert args.grad_clip == 2.0 and isinstance(args.grad_clip, float)
    assert args.contrast_snr_db == (5.0, 9.0) and args.steps == 1000 and not args.contrast_on
    assert set(args.to_dict()) == set(schema.TRAIN_ARGS_DOC)
    assert yaml.safe_load(yaml.safe_dump(args.to_dict()))["contrast_snr_db"] == [5.0, 9.0]
    with pytest.raises(ConfigError, match="train_args.batch_size: must be >= 1|batch_size must"):
        schema.PretrainArgs(batch_size=0)  # the constructor checks too


def _old_pretrain_lr(step, peak, warmup, total):
    """The schedule hubert.py had before it used wespeaker_lap.lr_schedule."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@pytest.mark.parametrize("steps, warmup_steps, lr", [(1900, 80, 2e-3), (30, 5, 3e-3),
                                                       (12, 80, 2e-3), (7, 0, 1e-3)])
def test_pretrain_lr_sequence_is_the_old_one(steps, warmup_steps, lr):
    args = schema.parse_train_args({"steps": steps, "warmup_steps": warmup_steps, "lr": lr})
    warmup = hubert.warmup_length(args)
    new = [hubert.scheduled_lr(s, args, warmup, 0.0, None) for s in range(steps)]
    old = [_old_pretrain_lr(s, lr, warmup, steps) for s in range(steps)]
    assert new == pytest.approx(old, rel=1e-12, abs=0)
    assert max(new) == pytest.approx(lr) and new[0] > 0


def test_chance_levels_come_from_the_unit_frequencies():
    units = [np.array([0, 0, 1, 2]), np.array([0, 3, 3])]
    freq = kmeans.unit_frequencies(units, 5)
    inline = np.bincount(np.concatenate(units), minlength=5) / sum(len(u) for u in units)
    assert np.array_equal(freq, inline) and freq[4] == 0.0  # what hubert.train computed inline
    hist = hubert.chance_levels(units, 5, contrast_batch=0)
    p = np.array([3, 1, 1, 2]) / 7
    assert hist.unigram_entropy == pytest.approx(float(-(p * np.log(p)).sum()))
    assert hist.majority_acc == pytest.approx(3 / 7) and hist.chance_loss == pytest.approx(
        math.log(5))


# ---- reduced precision (train_args.dtype, --dtype)
def test_bfloat16_pretraining_learns_and_saves_float32_weights(tmp_path, caplog):
    rng = np.random.default_rng(2)
    scp = write_scp(tmp_path, [tone_utterance(rng) for _ in range(12)])
    cfg = tiny(steps=60, num_units=6, batch_size=8, crop_seconds=1.0, lr=3e-3,
               warmup_steps=5, log_every=20, dtype="bfloat16")
    with caplog.at_level("INFO", logger="wespeaker_lap.pretrain.hubert"):
        hist = pretrain_ssl.pretrain(cfg, [scp], str(tmp_path / "ssl"), seed=0)
    assert "pre-training forward in bfloat16 (train_args.dtype bfloat16" in caplog.text
    assert np.isfinite(hist.loss).all()
    assert hist.mean("loss", False, 10) < hist.mean("loss", True, 10) - 0.2
    assert hist.mean("acc", False, 10) > 2 * hist.chance_acc
    fe = SSLFrontend(tmp_path / "ssl")
    assert next(fe.model.parameters()).dtype == torch.float32
    ran = yaml.safe_load((tmp_path / "ssl" / "pretrain.yaml").read_text())
    assert ran["train_args"]["dtype"] == "bfloat16"


def test_bfloat16_step_differs_from_float32_only_by_rounding(wav_scp):
    """The autocast forward computes the same loss as float32, within bfloat16's rounding."""
    args = schema.parse_train_args({"batch_size": 2, "crop_seconds": 0.5, "num_units": 4})
    corpus = features.load_corpus([wav_scp], 0.5)
    units = [np.zeros(features.num_frames(len(w)), dtype=np.int64) for w in corpus.wavs]
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = hubert.HubertPretrainModel(hubert.build_config(TINY_MODEL), 4)
        rng = np.random.default_rng(0)
        batch = hubert.draw_batch(corpus, units, rng, args, 8000)
        opt = hubert.build_optimizer(model, args)
        losses[dtype] = hubert.optimizer_step(model, opt, *batch, args, dtype).masked_loss
    assert losses[torch.float32] == pytest.approx(losses[torch.bfloat16], rel=0.05)


# ---- train_args.attention
def test_eager_attention_computes_the_sdpa_step_and_saves_the_same_kind_of_model(
        tmp_path, wav_scp):
    """eager and sdpa are two implementations of one attention: the same loss and gradients
    within float32 rounding; the saved model does not record which one trained it."""
    args = schema.parse_train_args({"batch_size": 2, "crop_seconds": 0.5, "num_units": 4})
    corpus = features.load_corpus([wav_scp], 0.5)
    units = [np.zeros(features.num_frames(len(w)), dtype=np.int64) for w in corpus.wavs]
    grads, losses = {}, {}
    for attention in ("sdpa", "eager"):
        torch.manual_seed(0)
        config = hubert.build_config(TINY_MODEL, attention)
        assert config._attn_implementation == attention
        model = hubert.HubertPretrainModel(config, 4)
        batch = hubert.draw_batch(corpus, units, np.random.default_rng(0), args, 8000)
        opt = hubert.build_optimizer(model, args)
        losses[attention] = hubert.optimizer_step(model, opt, *batch, args).masked_loss
        grads[attention] = torch.cat([p.grad.flatten() for p in model.parameters()
                                      if p.grad is not None])
    assert losses["eager"] == pytest.approx(losses["sdpa"], rel=1e-4)
    torch.testing.assert_close(grads["eager"], grads["sdpa"], rtol=1e-3, atol=1e-5)
    pretrain_ssl.pretrain(tiny(steps=2, attention="eager"), [wav_scp], str(tmp_path / "o"),
                          seed=0)
    assert "attn" not in (tmp_path / "o" / "config.json").read_text()
    ran = yaml.safe_load((tmp_path / "o" / "pretrain.yaml").read_text())
    assert ran["train_args"]["attention"] == "eager"
    with pytest.raises(ConfigError, match=r"train_args.attention: 'flash' is not one of"):
        schema.parse_train_args({"attention": "flash"})


@pytest.mark.parametrize("bf16_kernels, probe, want, why", [
    (False, None, torch.float32, "CPU without bfloat16 kernels"),
    (True, RuntimeError("no kernel"), torch.float32, "CPU probe failed (no kernel)"),
    (True, (1.0, 0.5), torch.bfloat16, "CPU probe: float32"),
    (True, (1.0, 2.0), torch.float32, "CPU probe: float32"),
])
def test_auto_dtype_falls_back_to_float32_with_the_reason(monkeypatch, caplog, tmp_path, wav_scp,
                                                          bf16_kernels, probe, want, why):
    from wespeaker_lap.frontend import precision

    def gemm(dtypes):
        if isinstance(probe, Exception):
            raise probe
        return [probe[0] if d == torch.float32 else probe[1] for d in dtypes]

    monkeypatch.setattr(precision, "_AUTO_CACHE", {})
    monkeypatch.setattr(precision, "cpu_has_bf16_kernels", lambda: bf16_kernels)
    monkeypatch.setattr(precision, "_gemm_seconds", gemm)
    with caplog.at_level("INFO", logger="wespeaker_lap.pretrain.hubert"):
        pretrain_ssl.pretrain(tiny(steps=1, dtype="auto"), [wav_scp], str(tmp_path / "o"), seed=0)
    name = str(want).removeprefix("torch.")
    assert f"pre-training forward in {name} (train_args.dtype auto: {why}" in caplog.text


def test_unsupported_dtype_lists_the_choices(tmp_path, wav_scp, capsys):
    with pytest.raises(ConfigError, match=r"train_args.dtype: 'float16' is not one of "
                                          r"\['auto', 'bfloat16', 'float32'\]"):
        schema.parse_train_args({"dtype": "float16"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny()))
    with pytest.raises(SystemExit) as e:
        pretrain_ssl.main(["--config", str(cfg), "--wav_scp", wav_scp, "--out",
                           str(tmp_path / "o"), "--dtype", "fp16"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--dtype: invalid choice: 'fp16'" in err and "'bfloat16'" in err and "'auto'" in err
    assert not (tmp_path / "o").exists()
