"""SDPA attention: equal to transformers' eager attention on padded batches, every family."""

import copy

import pytest
import torch

from wespeaker_lap.frontend import SSL_FAMILIES, SSLFrontend, use_sdpa_attention
from wespeaker_lap.frontend.attention import WavLMSdpaAttention
from wespeaker_lap.frontend.testing import tiny_ssl_config

VARIANTS = [(f, False) for f in SSL_FAMILIES] + [
    (f, True) for f in SSL_FAMILIES if f not in ("data2vec-audio", "wav2vec2-bert")
]
IDS = [f"{f}-{'large' if s else 'base'}" for f, s in VARIANTS]


def _padded_batch(lengths):
    lengths = torch.tensor(lengths)
    n = int(lengths.max())
    return torch.randn(len(lengths), n) * (torch.arange(n)[None, :] < lengths[:, None]), lengths


@pytest.mark.parametrize("family,stable", VARIANTS, ids=IDS)
def test_sdpa_equals_eager_attention_on_a_padded_batch(family, stable):
    cfg = tiny_ssl_config(family, num_hidden_layers=3, stable_layer_norm=stable)
    sdpa = SSLFrontend(config=cfg)
    eager = SSLFrontend(config=cfg, attention="eager")
    assert sdpa.attention == "sdpa" and eager.attention == "eager"
    assert sdpa.state_dict().keys() == eager.state_dict().keys()
    eager.load_state_dict(sdpa.state_dict())
    wavs, lens = _padded_batch([24000, 7000, 12345])
    h_sdpa, n = sdpa(wavs, lens)
    h_eager, n_eager = eager(wavs, lens)
    assert torch.equal(n, n_eager)
    torch.testing.assert_close(h_sdpa, h_eager, atol=1e-5, rtol=1e-5)


def test_wavlm_frontend_uses_the_sdpa_module_and_transformers_otherwise():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"))
    assert all(isinstance(layer.attention, WavLMSdpaAttention) for layer in fe.model.encoder.layers)
    assert fe.model.config._attn_implementation == "eager"  # transformers has no WavLM SDPA
    assert SSLFrontend(config=tiny_ssl_config("hubert")).model.config._attn_implementation == "sdpa"
    eager = SSLFrontend(config=tiny_ssl_config("wavlm"), attention="eager")
    assert not any(isinstance(m, WavLMSdpaAttention) for m in eager.modules())
    with pytest.raises(ValueError, match="attention must be one of"):
        SSLFrontend(config=tiny_ssl_config("wavlm"), attention="flash")


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("valid", [(37, 20, 5), (37, 37, 37)], ids=["padded", "unpadded"])
@pytest.mark.parametrize("budget", [1 << 26, 1000], ids=["one-block", "query-blocks"])
def test_wavlm_sdpa_module_equals_transformers_module(budget, valid):
    """One attention module, with padded keys, in the first layer (bias made) and a later one."""
    fe = SSLFrontend(config=tiny_ssl_config("wavlm", num_hidden_layers=2), attention="eager")
    ref0 = fe.model.encoder.layers[0].attention
    ref1 = fe.model.encoder.layers[1].attention
    new0, new1 = copy.deepcopy(ref0), copy.deepcopy(ref1)
    holder = torch.nn.ModuleList([new0, new1])
    assert use_sdpa_attention(holder, mask_budget=budget) == 2
    b, t, d = 3, 37, 32
    x = torch.randn(b, t, d)
    mask = (torch.arange(t)[None, :] < torch.tensor(valid)[:, None]).long()
    with torch.no_grad():
        out_ref, _, bias_ref = ref0(x, attention_mask=mask)
        out_new, _, bias_new = new0(x, attention_mask=mask)
        out_ref1, _, _ = ref1(out_ref, attention_mask=mask, position_bias=bias_ref)
        out_new1, _, _ = new1(out_ref, attention_mask=mask, position_bias=bias_new)
    valid = mask.bool()
    torch.testing.assert_close(out_new[valid], out_ref[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_new1[valid], out_ref1[valid], atol=1e-5, rtol=1e-5)
    # the relative-offset table holds exactly transformers' bias values
    full = bias_new[torch.arange(t)[None, :] - torch.arange(t)[:, None] + t - 1].permute(2, 0, 1)
    torch.testing.assert_close(full, bias_ref.view(b, -1, t, t)[0], atol=0, rtol=0)


def test_wavlm_sdpa_trains_like_eager():
    """Trainable mode: same gradients through SDPA (dropout off) as through eager attention."""
    cfg = tiny_ssl_config("wavlm", num_hidden_layers=2)
    grads = []
    for attention in ("sdpa", "eager"):
        fe = SSLFrontend(config=cfg, frozen=False, attention=attention)
        fe.model.config.attention_dropout = 0.0
        for layer in fe.model.encoder.layers:
            layer.attention.dropout = 0.0
        fe.eval()
        torch.manual_seed(0)
        hidden, _ = fe(*_padded_batch([8000, 5000]))
        hidden.square().mean().backward()
        grads.append(fe.model.encoder.layers[0].attention.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
