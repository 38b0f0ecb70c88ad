"""LAP: layer scores, and the fast implementation against the authors'-layout reference."""

import torch

from benchmarks.lap_reference import NaiveLAP_ASTP
from wespeaker_lap.models import LAP_ASTP, LayerAttentivePooling


def fast_and_reference(dtype=torch.float32):
    torch.manual_seed(0)
    fast = LAP_ASTP(feat_dim=64, num_layers=7, embed_dim=16, lap_dim=32, heads=4).to(dtype)
    # BN statistics away from their init so eval mode is a real test
    with torch.no_grad():
        for bn in (fast.aggregation.in_norm, fast.aggregation.out_norm):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    ref = NaiveLAP_ASTP(64, 7, embed_dim=16, lap_dim=32, heads=4).to(dtype).load_from(fast)
    return fast, ref


def test_lap_scores_have_shape_batch_heads_frames_layers_and_lie_in_open_unit_interval():
    lap = LayerAttentivePooling(num_layers=6, in_dim=32, out_dim=16, heads=4).eval()
    out, scores = lap(torch.randn(3, 6, 10, 32), return_scores=True)
    assert out.shape == (3, 10, 16)
    assert scores.shape == (3, 4, 10, 6)
    assert (scores > 0).all() and (scores < 1).all()


def test_lap_scores_are_pre_dropout_in_training():
    lap = LayerAttentivePooling(num_layers=6, in_dim=32, out_dim=16, heads=4, dropout=0.5).train()
    _, scores = lap(torch.randn(3, 6, 10, 32), return_scores=True)
    assert (scores > 0).all() and (scores < 1).all()


def test_fast_lap_astp_equals_reference_layout_in_eval():
    fast, ref = fast_and_reference()
    fast.eval()
    ref.eval()
    x = torch.randn(4, 7, 12, 64) * 2 + 0.5
    emb, scores = fast(x, return_layer_scores=True)
    emb_ref, scores_ref = ref(x, return_layer_scores=True)
    torch.testing.assert_close(emb, emb_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores, scores_ref, rtol=1e-5, atol=1e-6)


def test_fast_lap_astp_equals_reference_in_training_forward_backward_and_running_stats():
    # float64: batch statistics over a batch of 4 amplify float32 rounding
    fast, ref = fast_and_reference(torch.float64)
    for m in (fast, ref):
        m.train()
    fast.aggregation.score_dropout.p = ref.lap.score_dropout.p = 0.0
    fast.pooling.frame_dropout = ref.astp.frame_dropout = 0.0
    x = torch.randn(4, 7, 12, 64, dtype=torch.float64) * 2 + 0.5
    fast(x).square().sum().backward()
    ref(x).square().sum().backward()
    agg, lap = fast.aggregation, ref.lap
    pairs = [
        (agg.in_proj.weight.grad, lap.in_proj.weight.grad[:, :, 0, 0]),
        (agg.in_norm.weight.grad, lap.in_norm.weight.grad),
        (agg.in_norm.bias.grad, lap.in_norm.bias.grad),
        (agg.se_w1.grad, lap.se_w1.grad),
        (agg.out_proj.weight.grad, lap.out_proj.weight.grad[:, :, 0]),
        (fast.pooling.attn_in.weight.grad, ref.astp.attention[0].weight.grad[:, :, 0]),
        (agg.in_norm.running_var, lap.in_norm.running_var),
        (agg.out_norm.running_mean, lap.out_norm.running_mean),
    ]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    fast.eval()
    ref.eval()
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-9, atol=1e-10)


def test_lap_astp_under_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    model = LAP_ASTP(feat_dim=64, num_layers=7, embed_dim=16, lap_dim=32, heads=4).eval()
    x = torch.randn(3, 7, 12, 64)
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
