"""SSLFrontend on tiny random configs of every waveform (CNN) family; w2v-BERT has its own file."""

import json

import pytest
import torch

from wespeaker_lap.frontend import SSL_FAMILIES, SSLFrontend, get_frontend
from wespeaker_lap.frontend.testing import tiny_ssl_config

CNN_FAMILIES = [f for f in SSL_FAMILIES if f != "wav2vec2-bert"]
# (family, stable layer norm): Base-style (GroupNorm CNN) and Large-style (LayerNorm CNN) variants.
VARIANTS = [(f, False) for f in CNN_FAMILIES] + [
    (f, True) for f in CNN_FAMILIES if f != "data2vec-audio"
]
IDS = [f"{f}-{'large' if s else 'base'}" for f, s in VARIANTS]


def _padded_batch(lengths, n=None):
    lengths = torch.tensor(lengths)
    n = n or int(lengths.max())
    wavs = torch.randn(len(lengths), n) * (torch.arange(n)[None, :] < lengths[:, None])
    return wavs, lengths


@pytest.mark.parametrize("family,stable", VARIANTS, ids=IDS)
def test_shapes_and_frame_lengths(family, stable):
    fe = SSLFrontend(config=tiny_ssl_config(family, num_hidden_layers=3, stable_layer_norm=stable))
    wavs, lens = _padded_batch([16000, 8000, 400])
    hidden, frames = fe(wavs, lens)
    assert fe.num_layers == 4 and fe.hidden_size == 32
    assert hidden.shape == (3, 4, 49, 32)
    assert hidden.dtype == torch.float32
    # 25 ms window, 20 ms hop: floor((n - 400) / 320) + 1
    assert frames.tolist() == [49, 24, 1]
    assert torch.all(hidden[1, :, 24:] == 0) and torch.all(hidden[2, :, 1:] == 0)


@pytest.mark.parametrize("family,stable", VARIANTS, ids=IDS)
def test_padded_batch_equals_each_utterance_alone(family, stable):
    fe = SSLFrontend(config=tiny_ssl_config(family, stable_layer_norm=stable))
    wavs, lens = _padded_batch([24000, 7000, 12345, 3210])
    hidden, frames = fe(wavs, lens)
    for i in range(len(lens)):
        alone, n = fe(wavs[i : i + 1, : lens[i]], lens[i : i + 1])
        assert int(n) == int(frames[i])
        torch.testing.assert_close(hidden[i, :, : frames[i]], alone[0], atol=2e-5, rtol=1e-4)


def test_plain_transformers_batching_would_leak_padding():
    """The check above can fail: without the length-aware GroupNorm the Base CNN leaks padding."""
    fe = SSLFrontend(config=tiny_ssl_config("wav2vec2"))
    wavs, lens = _padded_batch([24000, 7000])
    with torch.no_grad():
        fe._groupnorm.valid_frames = None
        out = fe.model(wavs, attention_mask=(torch.arange(24000)[None] < lens[:, None]).long(),
                       output_hidden_states=True)
        alone = fe.model(wavs[1:, :7000], output_hidden_states=True)
    leak = (out.hidden_states[1][1, :21] - alone.hidden_states[1][0]).abs().max()
    assert leak > 1e-2


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path, family):
    fe = SSLFrontend(config=tiny_ssl_config(family, stable_layer_norm=family == "wavlm"))
    fe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["do_normalize"] is (
        family == "wavlm"
    )
    again = SSLFrontend(tmp_path)
    wavs, lens = _padded_batch([16000, 9000])
    torch.testing.assert_close(fe(wavs, lens)[0], again(wavs, lens)[0], atol=0, rtol=0)
    assert again.model_name_or_path == str(tmp_path)


def test_loads_the_encoder_out_of_a_pretraining_checkpoint(tmp_path):
    import transformers

    cfg = dict(tiny_ssl_config("wav2vec2"))
    del cfg["model_type"]
    pre = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**cfg)).eval()
    pre.save_pretrained(tmp_path)
    fe = SSLFrontend(tmp_path)
    wavs, lens = _padded_batch([8000])
    with torch.no_grad():
        ref = pre.wav2vec2(wavs, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(fe(wavs, lens)[0][:, -1], ref, atol=1e-5, rtol=1e-4)


def test_frozen_frontend_has_no_gradients_and_no_graph():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"))
    fe.train()  # a parent's .train() must not switch dropout or layer drop on
    assert not fe.training and not fe.model.training
    assert not any(p.requires_grad for p in fe.parameters())
    hidden, _ = fe(*_padded_batch([8000, 6000]))
    assert not hidden.requires_grad and hidden.grad_fn is None


def test_frozen_forward_is_deterministic_in_train_mode_of_parent():
    fe = SSLFrontend(config=tiny_ssl_config("hubert"))
    parent = torch.nn.Sequential(fe)
    parent.train()
    wavs, lens = _padded_batch([8000, 6000])
    torch.testing.assert_close(fe(wavs, lens)[0], fe(wavs, lens)[0], atol=0, rtol=0)


def test_trainable_frontend_gets_gradients_except_frozen_cnn():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"), frozen=False, layerdrop=0.1)
    fe.train()
    assert fe.model.training and fe.model.config.layerdrop == 0.1
    hidden, _ = fe(*_padded_batch([8000, 6000]))
    hidden.pow(2).mean().backward()
    cnn = {id(p) for p in fe.model.feature_extractor.parameters()}
    for name, p in fe.named_parameters():
        if id(p) in cnn:
            assert not p.requires_grad and p.grad is None, name
    enc = [p for p in fe.model.encoder.parameters() if p.grad is not None]
    assert enc and any(p.grad.abs().sum() > 0 for p in enc)


def test_trainable_with_unfrozen_cnn_trains_the_cnn_too():
    fe = SSLFrontend(config=tiny_ssl_config("wav2vec2"), frozen=False, freeze_feature_encoder=False)
    hidden, _ = fe(*_padded_batch([8000]))
    hidden.sum().backward()
    assert fe.model.feature_extractor.conv_layers[0].conv.weight.grad is not None


def test_layer_subset_selects_those_hidden_states():
    fe_all = SSLFrontend(config=tiny_ssl_config("wavlm", num_hidden_layers=3))
    fe_sub = SSLFrontend(config=tiny_ssl_config("wavlm", num_hidden_layers=3), layers=[0, 3])
    fe_sub.load_state_dict(fe_all.state_dict())
    wavs, lens = _padded_batch([8000])
    assert fe_sub.num_layers == 2
    torch.testing.assert_close(fe_sub(wavs, lens)[0], fe_all(wavs, lens)[0][:, [0, 3]])


def test_bfloat16_frozen_forward_is_close_to_float32():
    fe32 = SSLFrontend(config=tiny_ssl_config("wavlm", stable_layer_norm=True))
    fe16 = SSLFrontend(config=tiny_ssl_config("wavlm", stable_layer_norm=True), dtype="bfloat16")
    fe16.load_state_dict(fe32.state_dict())
    wavs, lens = _padded_batch([16000, 9000])
    h32, _ = fe32(wavs, lens)
    h16, _ = fe16(wavs, lens)
    assert h16.dtype == torch.float32
    assert next(fe16.model.parameters()).dtype == torch.bfloat16
    rel = (h16 - h32).norm() / h32.norm()
    assert rel < 0.05, rel


def test_normalising_models_ignore_the_input_gain():
    fe = SSLFrontend(config=tiny_ssl_config("wav2vec2"), normalize=True)
    wavs, lens = _padded_batch([12000, 8000])
    torch.testing.assert_close(fe(wavs, lens)[0], fe(3.0 * wavs, lens)[0], atol=1e-4, rtol=1e-3)


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*nowhere"):
        SSLFrontend(tmp_path / "nowhere")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SSLFrontend(tmp_path)


def test_unreachable_hub_id_names_the_id_and_offline_mode():
    with pytest.raises(OSError, match="no-such-org/no-such-model.*HF_HUB_OFFLINE"):
        SSLFrontend("no-such-org/no-such-model")


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match="unsupported SSL model type 'bert'.*wavlm"):
        SSLFrontend(config={"model_type": "bert"})
    import transformers

    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unsupported SSL model type 'bert'"):
        SSLFrontend(tmp_path)


def test_unknown_config_field_is_an_error():
    cfg = tiny_ssl_config("hubert")
    cfg["hiden_size"] = 64
    with pytest.raises(ValueError, match="hiden_size"):
        SSLFrontend(config=cfg)


def test_wrong_sample_rate_is_an_error_not_a_resample():
    with pytest.raises(ValueError, match="8000 Hz.*16000 Hz"):
        SSLFrontend(config=tiny_ssl_config("wavlm"), sample_rate=8000)


def test_bad_inputs_are_rejected():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"))
    with pytest.raises(ValueError, match="receptive field"):
        fe(torch.randn(1, 300))
    with pytest.raises(ValueError, match="lengths"):
        fe(torch.randn(2, 8000), torch.tensor([8000, 9000]))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        fe(torch.randn(8000))
    with pytest.raises(ValueError, match="layers"):
        SSLFrontend(config=tiny_ssl_config("wavlm"), layers=[0, 7])
    with pytest.raises(ValueError, match="frozen forward only"):
        SSLFrontend(config=tiny_ssl_config("wavlm"), frozen=False, dtype="bfloat16")


def test_registry_builds_ssl_and_rejects_unknown_names():
    fe = get_frontend("ssl", config=tiny_ssl_config("wavlm"))
    assert isinstance(fe, SSLFrontend)
    with pytest.raises(ValueError, match=r"unknown frontend 'fbank'; valid: \['ssl'\]"):
        get_frontend("fbank")


def test_random_config_frontend_is_the_same_on_every_build():
    """A frozen random SSL model is not saved in checkpoints: rebuilding must restore it."""
    torch.manual_seed(123)
    a = SSLFrontend(config=tiny_ssl_config("wavlm")).state_dict()
    state = torch.random.get_rng_state()
    b = SSLFrontend(config=tiny_ssl_config("wavlm")).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    c = SSLFrontend(config=tiny_ssl_config("wavlm"), init_seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_registry_rejects_unknown_constructor_arguments():
    with pytest.raises(ValueError, match=r"frontend 'ssl' got unknown argument\(s\) \['confg'\]"):
        get_frontend("ssl", confg=tiny_ssl_config("wavlm"))


# ----------------------------------------------------------------- dtype "auto"
@pytest.fixture
def fake_probe(monkeypatch):
    """Make the CPU probe report chosen speeds (seconds per product) and forget its cache."""
    from wespeaker_lap.frontend import precision

    def set_speeds(fp32, bf16):
        monkeypatch.setattr(precision, "_AUTO_CACHE", {})
        monkeypatch.setattr(precision, "_gemm_seconds", lambda dtypes: [
            fp32 if dtype == torch.float32 else bf16 for dtype in dtypes])

    return set_speeds


@pytest.mark.parametrize("fp32,bf16,want", [(1.0, 2.0, torch.float32), (1.0, 0.5, torch.bfloat16),
                                            (1.0, 0.9, torch.float32)])
def test_auto_dtype_follows_the_cpu_probe_and_logs_why(fake_probe, caplog, fp32, bf16, want):
    fake_probe(fp32, bf16)
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"), dtype="auto")
    assert fe.dtype == torch.float32  # resolved at the first forward, on the input's device
    with caplog.at_level("INFO", logger="wespeaker_lap.frontend.ssl"):
        hidden, _ = fe(*_padded_batch([8000, 6000]))
    assert fe.dtype == want and next(fe.model.parameters()).dtype == want
    assert hidden.dtype == torch.float32
    if want == torch.bfloat16:
        assert "dtype auto on cpu: bfloat16 (CPU probe: float32" in caplog.text


def test_auto_dtype_on_cuda_is_bfloat16_where_supported(fake_probe, monkeypatch):
    from wespeaker_lap.frontend import auto_dtype

    fake_probe(1.0, 1.0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert auto_dtype("cuda")[0] == torch.bfloat16
    fake_probe(1.0, 1.0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert auto_dtype("cuda")[0] == torch.float32


def test_auto_dtype_of_a_trainable_frontend_is_float32(fake_probe):
    fake_probe(1.0, 0.1)
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"), frozen=False, dtype="auto")
    fe(*_padded_batch([8000]))
    assert next(fe.model.parameters()).dtype == torch.float32


def test_explicit_bfloat16_slower_than_float32_is_kept_with_a_warning(fake_probe, caplog):
    fake_probe(1.0, 2.0)
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"), dtype="bfloat16")
    with caplog.at_level("WARNING", logger="wespeaker_lap.frontend.ssl"):
        fe(*_padded_batch([8000]))
        fe(*_padded_batch([8000]))
    assert caplog.text.count("not clearly faster than float32 on this CPU") == 1
    assert fe.dtype == torch.bfloat16


def test_unknown_dtype_lists_auto():
    with pytest.raises(ValueError, match="'auto'"):
        SSLFrontend(config=tiny_ssl_config("wavlm"), dtype="fp8")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_length_aware_groupnorm_normalises_each_utterance_over_its_valid_frames(dtype):
    from wespeaker_lap.frontend import LengthAwareGroupNorm

    norm = LengthAwareGroupNorm(4, 4).to(dtype)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = (torch.randn(3, 4, 50) * 3 + 1).to(dtype)
    norm.valid_frames = torch.tensor([50, 20, 7])
    out = norm(x)
    assert out.dtype == dtype
    norm.valid_frames = None
    for i, v in enumerate([50, 20, 7]):
        assert torch.equal(out[i, :, :v], norm(x[i : i + 1, :, :v])[0])
        assert torch.all(out[i, :, v:] == 0)
    ref = torch.nn.functional.group_norm(x[1:2, :, :20].float(), 4, norm.weight.float(),
                                         norm.bias.float())
    torch.testing.assert_close(out[1:2, :, :20].float(), ref, atol=0.05 if dtype != torch.float32
                               else 1e-6, rtol=0.02 if dtype != torch.float32 else 1e-5)
