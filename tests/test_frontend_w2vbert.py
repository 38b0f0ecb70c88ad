"""w2v-BERT 2.0 family: in-frontend fbank equal to transformers' extractor, sizes, modes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml

from wespeaker_lap.frontend import SSLFrontend, StackedFbank
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.models import build_extractor

CONF = Path(__file__).resolve().parents[1] / "conf"
# float32 torch against the extractor's numpy, which keeps the spectrum in complex64: a
# float64 computation differs from it as much (up to ~5e-3 on quiet, low-variance bins).
FBANK_ATOL = 1e-2
FBANK_MEAN_ATOL = 1e-4


def _speechlike(lengths, seed=0):
    """Tones + noise with a wide dynamic range (quiet high bands test the float32 FFT)."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    t = torch.arange(n) / 16000
    wavs = torch.zeros(len(lengths), n)
    for i, length in enumerate(lengths):
        sig = (0.3 * torch.sin(2 * np.pi * (150 + 90 * i) * t)
               + 0.05 * torch.sin(2 * np.pi * 1234.5 * t) * torch.sin(2 * np.pi * 3 * t)
               + 1e-3 * torch.randn(n, generator=g))
        wavs[i, :length] = sig[:length]
    return wavs, torch.tensor(lengths)


def _tiny(**kw):
    return tiny_ssl_config("wav2vec2-bert", **kw)


def test_fbank_equals_seamless_m4t_feature_extractor():
    lengths = [16000, 8123, 999, 560, 15680]  # odd and even 10 ms frame counts
    wavs, lens = _speechlike(lengths)
    ours, frames = StackedFbank()(wavs, lens)
    ref = transformers.SeamlessM4TFeatureExtractor()(
        [wavs[i, :n].numpy() for i, n in enumerate(lengths)], sampling_rate=16000,
        return_tensors="pt",
    )
    assert frames.tolist() == ref["attention_mask"].sum(1).tolist() == [49, 24, 2, 1, 48]
    assert ours.shape[-1] == ref["input_features"].shape[-1] == 160
    for i, t in enumerate(frames.tolist()):
        diff = (ours[i, :t] - ref["input_features"][i, :t]).abs()
        assert diff.max() < FBANK_ATOL and diff.mean() < FBANK_MEAN_ATOL, (diff.max(), diff.mean())
        assert torch.all(ours[i, t:] == 0)


def test_fbank_of_a_padded_batch_equals_each_utterance_alone():
    fb = StackedFbank()
    wavs, lens = _speechlike([24000, 7001, 3333])
    feats, frames = fb(wavs, lens)
    for i in range(3):
        alone, n = fb(wavs[i : i + 1, : lens[i]], lens[i : i + 1])
        assert int(n) == int(frames[i])
        torch.testing.assert_close(feats[i, : frames[i]], alone[0], atol=1e-5, rtol=1e-5)


def test_w2vbert_sizes_frames_and_padding():
    fe = SSLFrontend(config=_tiny(num_hidden_layers=3))
    assert fe.model_type == "wav2vec2-bert" and isinstance(fe.fbank, StackedFbank)
    assert (fe.num_layers, fe.hidden_size, fe.hop_samples, fe.min_samples) == (4, 32, 320, 560)
    wavs, lens = _speechlike([16000, 8000, 560])
    hidden, frames = fe(wavs, lens)
    assert hidden.shape == (3, 4, 49, 32) and hidden.dtype == torch.float32
    assert frames.tolist() == [49, 24, 1] == fe.frame_lengths(lens).tolist()
    assert torch.all(hidden[1, :, 24:] == 0) and torch.all(hidden[2, :, 1:] == 0)
    with pytest.raises(ValueError, match="receptive field \\(560 samples\\)"):
        fe(torch.randn(1, 559))


def test_w2vbert_padded_batch_equals_each_utterance_alone():
    fe = SSLFrontend(config=_tiny())
    wavs, lens = _speechlike([24000, 7000, 12345, 3210])
    hidden, frames = fe(wavs, lens)
    for i in range(len(lens)):
        alone, n = fe(wavs[i : i + 1, : lens[i]], lens[i : i + 1])
        assert int(n) == int(frames[i])
        torch.testing.assert_close(hidden[i, :, : frames[i]], alone[0], atol=2e-5, rtol=1e-4)


def test_w2vbert_frontend_equals_transformers_on_its_own_features():
    fe = SSLFrontend(config=_tiny())
    wavs, lens = _speechlike([16000, 9000])
    hidden, frames = fe(wavs, lens)
    ref_in = transformers.SeamlessM4TFeatureExtractor()(
        [wavs[i, :n].numpy() for i, n in enumerate(lens.tolist())], sampling_rate=16000,
        return_tensors="pt",
    )
    with torch.no_grad():
        ref = fe.model(**ref_in, output_hidden_states=True).hidden_states
    for i, t in enumerate(frames.tolist()):  # the fbank's rounding (above), propagated
        diff = (hidden[i, :, :t] - torch.stack(ref)[:, i, :t]).abs()
        assert diff.max() < 2e-2 and diff.mean() < 1e-3, (diff.max(), diff.mean())


def test_w2vbert_frozen_and_trainable_modes():
    frozen = SSLFrontend(config=_tiny())
    assert not any(p.requires_grad for p in frozen.parameters())
    trainable = SSLFrontend(config=_tiny(), frozen=False, layerdrop=0.1)
    trainable.train()
    assert trainable.model.training and trainable.model.config.layerdrop == 0.1
    hidden, _ = trainable(*_speechlike([8000, 6000]))
    hidden.square().mean().backward()
    proj = trainable.model.feature_projection.projection.weight
    assert proj.grad is not None and proj.grad.abs().sum() > 0  # no CNN to keep frozen


def test_w2vbert_save_pretrained_round_trip(tmp_path):
    fe = SSLFrontend(config=_tiny())
    fe.save_pretrained(tmp_path)
    pre = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "SeamlessM4TFeatureExtractor" and pre["stride"] == 2
    again = SSLFrontend(tmp_path)
    wavs, lens = _speechlike([16000, 9000])
    torch.testing.assert_close(fe(wavs, lens)[0], again(wavs, lens)[0], atol=0, rtol=0)


def test_w2vbert_fbank_width_must_match_the_model(tmp_path):
    cfg = _tiny()
    cfg["feature_projection_input_dim"] = 128
    with pytest.raises(ValueError, match="80 mel bins x stride 2 = 160-d.*takes 128-d"):
        SSLFrontend(config=cfg)


def test_w2vbert_normalize_switches_the_per_mel_normalisation():
    on = SSLFrontend(config=_tiny())
    off = SSLFrontend(config=_tiny(), normalize=False)
    off.load_state_dict(on.state_dict())
    assert on.fbank.normalize and not off.fbank.normalize
    wavs, lens = _speechlike([12000, 9000])
    feats, frames = on.fbank(wavs, lens)
    valid = feats[1, : frames[1]].view(-1, 2, 80).flatten(0, 1)  # 10 ms frames, even count
    # (bins of near-constant log energy magnify float32 rounding: hence the loose bounds)
    assert valid.mean(0).abs().max() < 1e-2 and (valid.std(0) - 1).abs().median() < 1e-3
    assert (off(wavs, lens)[0] - on(wavs, lens)[0]).abs().max() > 1e-1


@pytest.mark.parametrize("name", ["lap_astp_w2vbert2.yaml", "lap_astp_w2vbert2_phase2.yaml",
                                  "lap_astp_w2vbert2_phase3.yaml"])
def test_w2vbert_configs_name_the_hub_model_and_build_on_a_tiny_w2vbert(name):
    cfg = yaml.safe_load((CONF / name).read_text())
    assert cfg["frontend_args"]["model_name_or_path"] == "facebook/w2v-bert-2.0"
    assert cfg["frontend_args"]["frozen"] is (name == "lap_astp_w2vbert2.yaml")
    args = {k: v for k, v in cfg["frontend_args"].items() if k != "model_name_or_path"}
    cfg["frontend_args"] = {**args, "config": _tiny(num_hidden_layers=3)}
    ext = build_extractor(cfg).train()
    emb = ext(*_speechlike([8000, 6000]))
    assert emb.shape == (2, cfg["model_args"]["embed_dim"])
    assert ext.frontend.num_layers == 4 and ext.frontend.hidden_size == 32
