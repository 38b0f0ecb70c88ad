"""CA-MHFA: context from neighbouring frames, padding independence, sizes, registry, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.models import build_extractor, count_parameters, get_speaker_model
from wespeaker_lap.models.ca_mhfa import CA_MHFA
from wespeaker_lap.models.mhfa import MHFA
from wespeaker_lap.utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
D, L = 16, 4


def tiny(**kw) -> CA_MHFA:
    args = {"embed_dim": 10, "head_nb": 4, "compression_dim": 6, "context": 3, **kw}
    return CA_MHFA(feat_dim=D, num_layers=L, **args)


def test_output_and_layer_score_shapes():
    model = tiny().eval()
    emb, scores = model(torch.randn(3, L, 7, D), torch.tensor([7, 5, 1]),
                        return_layer_scores=True)
    assert emb.shape == (3, 10) and model.embed_dim == 10
    assert scores.shape == (3, 2, 7, L)
    torch.testing.assert_close(scores.sum(-1), torch.ones(3, 2, 7))
    assert torch.isfinite(emb).all()


def test_utterance_alone_equals_padded_in_batch_in_eval():
    torch.manual_seed(4)
    model = tiny(context=5).eval()
    lengths = torch.tensor([12, 9, 2, 1])
    x = torch.randn(4, L, 12, D)
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = 1e4 * torch.randn(L, 12 - n, D)  # garbage in the padding
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(x[i:i + 1, :, :n], None)  # no lengths: every frame valid
            torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-5, atol=1e-5)


def test_context_one_is_mhfa_with_the_same_weights():
    # one query per group is MHFA's per-frame Linear(compression_dim, H) without bias
    ca, mhfa = tiny(context=1).eval(), MHFA(D, L, 10, 4, 6).eval()
    sd = {k: v for k, v in ca.state_dict().items() if k != "queries.weight"}
    sd["att_head.weight"] = ca.queries.weight[:, :, 0]
    sd["att_head.bias"] = torch.zeros(4)
    mhfa.load_state_dict(sd)
    x, lengths = torch.randn(2, L, 6, D), torch.tensor([6, 4])
    torch.testing.assert_close(ca(x, lengths), mhfa(x, lengths))


def test_neighbouring_frames_change_the_attention_only_with_context():
    # Changing frame 3 moves frame 2's logit (and so the pooling of frame 2's value)
    # when the window is 3 frames, not when it is 1: compare the attention maps.
    torch.manual_seed(2)
    for context, expect_change in ((1, False), (3, True)):
        model = tiny(context=context).eval()
        x = torch.randn(1, L, 6, D)
        y = x.clone()
        y[:, :, 3] += 1.0
        with torch.no_grad():
            ka = model.cmp_linear_k(x.mean(1))  # equal layer weights: the mean
            kb = model.cmp_linear_k(y.mean(1))
            la = model.queries(ka.transpose(1, 2))[0, :, 2]
            lb = model.queries(kb.transpose(1, 2))[0, :, 2]
        assert (not torch.allclose(la, lb)) == expect_change, context


def test_gradients_reach_every_parameter_and_not_a_frozen_input():
    model = tiny().train()
    x = torch.randn(3, L, 8, D)
    model(x, torch.tensor([8, 5, 3])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())
    assert x.grad is None


def test_constructor_rejects_even_context_and_bad_sizes():
    with pytest.raises(AssertionError, match="odd number of frames, got 4"):
        tiny(context=4)
    with pytest.raises(AssertionError, match="head_nb=0"):
        tiny(head_nb=0)
    with pytest.raises(AssertionError, match="built for 4 layers got 3"):
        tiny()(torch.randn(1, 3, 5, D))


@pytest.mark.parametrize(("num_layers", "feat_dim", "expected"),
                         [(13, 768, 2_335_258), (25, 1024, 2_400_818)])
def test_parameter_count_on_base_plus_and_large(num_layers, feat_dim, expected):
    # 2 x (D x 128 + 128) compression + 64 x 128 x 5 queries + 64*128 x 256 + 256 + 2L
    model = get_speaker_model("CA_MHFA", feat_dim=feat_dim, num_layers=num_layers)
    assert count_parameters(model) == expected


def test_registry_lookup_and_argument_check():
    assert isinstance(get_speaker_model("CA_MHFA", feat_dim=D, num_layers=L), CA_MHFA)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['groups'\].*head_nb"):
        get_speaker_model("CA_MHFA", feat_dim=D, num_layers=L, groups=4)


@pytest.mark.parametrize("name", ["ca_mhfa_wavlm_base_plus", "ca_mhfa_wavlm_large"])
def test_config_loads_and_builds_with_a_tiny_frontend(name):
    path = REPO / "conf" / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["model"] == "CA_MHFA"
    large = "large" in raw["frontend_args"]["model_name_or_path"]
    frontend = {**raw["frontend_args"], "model_name_or_path": None,
                "config": tiny_ssl_config("wavlm", stable_layer_norm=large)}
    cfg = load_config(path, ["--frontend_args",
                             yaml.safe_dump(frontend, default_flow_style=True)])
    model = build_extractor(cfg).eval()
    assert isinstance(model.backend, CA_MHFA) and model.backend.context == 5
    with torch.no_grad():
        emb = model(0.1 * torch.randn(2, 8000), torch.tensor([8000, 5000]))
    assert emb.shape == (2, 256)
