"""Speaker models on tiny random hidden states: shapes, padding, gradients, sizes, registry."""

import pytest
import torch

from wespeaker_lap.models import (
    ASTP,
    SPEAKER_MODELS,
    TSTP,
    WeightedLayerSum,
    build_speaker_model,
    count_parameters,
    get_speaker_model,
)
from wespeaker_lap.models.common import masked_batch_norm
from wespeaker_lap.models.interfaces import FramePoolingBackend, SpeakerBackend

D, L = 32, 5

# Small arguments per registry name (the ECAPA variants fix their channels).
TINY_ARGS = {
    "LAP_ASTP": {"lap_dim": 16, "heads": 4, "embed_dim": 12},
    "SUPERB_ASTP": {"embed_dim": 12},
    "SUPERB_TSTP": {"embed_dim": 12},
    "LastLayer_ASTP": {"embed_dim": 12},
    "MHFA": {"embed_dim": 12, "head_nb": 4, "compression_dim": 8},
    "CA_MHFA": {"embed_dim": 12, "head_nb": 4, "compression_dim": 8, "context": 3},
    "UniPool": {"embed_dim": 12, "channels": 16},
    "SSL_ECAPA_TDNN_c512": {"embed_dim": 12},
    "SSL_ECAPA_TDNN_c1024": {"embed_dim": 12},
}


def tiny(name):
    return get_speaker_model(name, feat_dim=D, num_layers=L, **TINY_ARGS[name])


def test_tiny_args_cover_the_registry():
    assert set(TINY_ARGS) == set(SPEAKER_MODELS)


@pytest.mark.parametrize("name", sorted(SPEAKER_MODELS))
def test_backend_output_shape_and_layer_scores_shape(name):
    model = tiny(name).eval()
    x = torch.randn(3, L, 9, D)
    emb, scores = model(x, torch.tensor([9, 6, 4]), return_layer_scores=True)
    assert emb.shape == (3, 12)
    assert scores.shape[0] == 3 and scores.shape[2] == 9
    assert scores.shape[3] == (L - 1 if name == "UniPool" else L)
    assert torch.isfinite(emb).all()


@pytest.mark.parametrize("name", sorted(SPEAKER_MODELS))
def test_backend_embedding_unchanged_by_padding_in_eval(name):
    torch.manual_seed(1)
    model = tiny(name).eval()
    lengths = torch.tensor([17, 11, 5])
    x = torch.randn(3, L, 17, D)
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = 1e3 * torch.randn(L, 17 - n, D)  # garbage in the padding
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(x[i : i + 1, :, :n], lengths[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SPEAKER_MODELS))
def test_backend_training_step_ignores_padding_content(name):
    # Same random draws (dropout) and only the padded frames differ: batch statistics
    # and pooling must not see them, so the training outputs are identical.
    model = tiny(name).train()
    lengths = torch.tensor([10, 7, 4, 10])
    x = torch.randn(4, L, 10, D)
    x_garbage = x.clone()
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = 0.0
        x_garbage[i, :, n:] = 50.0 * torch.randn(L, 10 - n, D)
    torch.manual_seed(3)
    a = model(x, lengths)
    torch.manual_seed(3)
    b = model(x_garbage, lengths)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SPEAKER_MODELS))
def test_gradients_reach_every_backend_parameter(name):
    model = tiny(name).train()
    x = torch.randn(4, L, 8, D)
    model(x, torch.tensor([8, 8, 6, 5])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert x.grad is None


# Parameter counts of the authors' configurations (LAP: Kim et al., Interspeech 2025;
# MHFA: Peng et al., SLT 2022; ECAPA-TDNN: WeSpeaker's c512), backend only.
@pytest.mark.parametrize(
    ("name", "num_layers", "feat_dim", "expected"),
    [
        ("LAP_ASTP", 13, 768, 1.71e6),
        ("LAP_ASTP", 25, 1024, 2.31e6),
        ("SUPERB_ASTP", 13, 768, 1.48e6),
        ("MHFA", 13, 768, 2.3e6),
        ("SSL_ECAPA_TDNN_c512", 13, 768, 7.95e6),
    ],
)
def test_parameter_count_within_two_percent_of_anchor(name, num_layers, feat_dim, expected):
    model = get_speaker_model(name, feat_dim=feat_dim, num_layers=num_layers)
    assert abs(count_parameters(model) - expected) / expected < 0.02


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown speaker model 'LAP_ASTPP'.*LAP_ASTP"):
        get_speaker_model("LAP_ASTPP", feat_dim=D, num_layers=L)


def test_unknown_model_argument_lists_valid_arguments():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['head'\].*heads"):
        get_speaker_model("LAP_ASTP", feat_dim=D, num_layers=L, head=4)


def test_build_speaker_model_fills_sizes_from_frontend():
    model = build_speaker_model("SUPERB_TSTP", {"feat_dim": -1, "embed_dim": 7}, D, L)
    assert model(torch.randn(2, L, 4, D)).shape == (2, 7)
    model = build_speaker_model("SUPERB_TSTP", {}, D, L)
    assert model.aggregation.num_layers == L


def test_build_speaker_model_rejects_size_disagreeing_with_frontend():
    with pytest.raises(ValueError, match="model_args.feat_dim=768 disagrees"):
        build_speaker_model("SUPERB_TSTP", {"feat_dim": 768}, D, L)


def test_constructor_rejects_heads_not_dividing_width():
    with pytest.raises(AssertionError, match="in_dim=30 must split evenly into heads=4"):
        get_speaker_model("LAP_ASTP", feat_dim=30, num_layers=L, heads=4)


def test_superb_weights_start_uniform():
    ws = WeightedLayerSum(4)
    torch.testing.assert_close(ws.layer_weights(), torch.full((4,), 0.25))


def test_tstp_matches_mean_and_unbiased_std_of_valid_frames():
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2]).bool()
    out = TSTP(3)(x, mask)
    valid = x[1, :4]
    torch.testing.assert_close(out[1], torch.cat([valid.mean(0), valid.std(0)]))


def test_astp_frame_dropout_only_in_training_and_never_empties_an_utterance():
    pool = ASTP(4, frame_dropout=0.9)
    x = torch.randn(8, 3, 4)
    mask = torch.tensor([[True, False, False]] * 8)
    pool.train()
    out = pool(x, mask)
    # one valid frame: whatever is dropped, the weighted mean is that frame
    torch.testing.assert_close(out[:, :4], x[:, 0])
    pool.eval()
    torch.testing.assert_close(pool(x, mask), pool(x, mask))


def test_masked_batch_norm_uses_valid_positions_only_in_training():
    bn = torch.nn.BatchNorm1d(3, momentum=1.0)
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    y = masked_batch_norm(x, bn, mask)
    valid = x[mask]
    torch.testing.assert_close(bn.running_mean, valid.mean(0))
    torch.testing.assert_close(bn.running_var, valid.var(0))
    torch.testing.assert_close(y[mask].mean(0), torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(SPEAKER_MODELS))
def test_every_backend_meets_the_interface_the_extractor_relies_on(name):
    """Each registry model is a SpeakerBackend; those that split into frame features and
    pooling (all but UniPool) give their forward's embedding through the two halves."""
    model = tiny(name).eval()
    assert isinstance(model, SpeakerBackend) and model.embed_dim == 12
    assert isinstance(model, FramePoolingBackend) == (name != "UniPool")
    if name == "UniPool":
        return
    x, lengths = torch.randn(3, L, 9, D), torch.tensor([9, 6, 4])
    with torch.no_grad():
        frames, _ = model.frame_features(x, lengths)
        torch.testing.assert_close(model.pool_frames(frames, lengths), model(x, lengths))


def test_the_extractor_refuses_a_backend_without_the_interface():
    from wespeaker_lap.models import SpeakerEmbeddingExtractor

    with pytest.raises(TypeError, match="Linear is not a SpeakerBackend"):
        SpeakerEmbeddingExtractor(torch.nn.Identity(), torch.nn.Linear(2, 2))
