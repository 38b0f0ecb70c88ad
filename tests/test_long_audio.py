"""Audio of any length: windowed SSL forward + the backend's frame/utterance split."""

import pytest
import torch

from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.models import build_extractor
from wespeaker_lap.models.extractor import _concat_chunks

SR = 16000
BACKENDS = ["LAP_ASTP", "SUPERB_ASTP", "LastLayer_ASTP", "MHFA", "CA_MHFA",
            "SSL_ECAPA_TDNN_c512", "UniPool"]
TINY = {"LAP_ASTP": {"lap_dim": 16, "heads": 4}, "MHFA": {"head_nb": 4, "compression_dim": 8},
        "CA_MHFA": {"head_nb": 4, "compression_dim": 8, "context": 3},
        "UniPool": {"channels": 16, "heads": 4}}


def extractor(model: str, family: str = "wavlm"):
    torch.manual_seed(0)
    cfg = {"frontend": "ssl", "frontend_args": {"config": tiny_ssl_config(family)},
           "model": model, "model_args": {"embed_dim": 8, **TINY.get(model, {})}}
    return build_extractor(cfg).eval()


@pytest.mark.parametrize("model", BACKENDS)
def test_long_audio_pools_the_windowed_frames_exactly(model):
    # a 3.2 s and a 1.1 s utterance, 1 s windows: the streamed embedding equals the backend
    # run on all windows' hidden states joined (the same frames, pooled once)
    ext = extractor(model)
    g = torch.Generator().manual_seed(1)
    wavs = torch.randn(2, int(3.2 * SR), generator=g)
    lengths = torch.tensor([wavs.shape[1], int(1.1 * SR)])
    emb, scores = ext.embed(wavs, lengths, return_layer_scores=True, window=1.0, overlap=0.2)
    with torch.no_grad():
        chunks = list(ext.frontend.forward_windows(wavs, lengths, 1.0, 0.2))
        hidden, frames = _concat_chunks(chunks, time_dim=2)
        ref, ref_scores = ext.backend(hidden, frames, return_layer_scores=True)
    assert frames.tolist() == ext.frontend.frame_lengths(lengths).tolist()
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-5)
    if scores is not None:
        for i, n in enumerate(frames.tolist()):
            torch.testing.assert_close(scores[i, :, :n], ref_scores[i, :, :n])


@pytest.mark.parametrize("model", ["LAP_ASTP", "MHFA"])
def test_audio_shorter_than_the_window_takes_the_whole_utterance_path(model):
    ext = extractor(model)
    wavs = torch.randn(2, SR)
    lengths = torch.tensor([SR, SR // 2])
    with torch.no_grad():
        whole = ext(wavs, lengths)
    assert torch.equal(ext.embed(wavs, lengths, window=1.0), whole)


def test_long_utterance_alone_equals_it_in_a_batch():
    ext = extractor("LAP_ASTP")
    long = torch.randn(int(2.7 * SR))
    short = torch.randn(int(0.8 * SR))
    batch = torch.zeros(2, long.numel())
    batch[0] = long
    batch[1, : short.numel()] = short
    both = ext.embed(batch, torch.tensor([long.numel(), short.numel()]), window=1.0, overlap=0.2)
    alone = ext.embed(long[None], None, window=1.0, overlap=0.2)
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1], ext.embed(short[None], window=1.0)[0], atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("activation, masked", [("relu_bn", True), ("tanh", False)])
def test_astp_pools_long_utterances_in_blocks_like_in_one_pass(activation, masked):
    from wespeaker_lap.models.pooling import ASTP

    torch.manual_seed(0)
    pool = ASTP(16, activation=activation).eval()
    with torch.no_grad():
        if pool.attn_norm is not None:
            pool.attn_norm.running_mean.uniform_(-1, 1)
            pool.attn_norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 1000, 16) * 3
    mask = torch.arange(1000)[None, :] < torch.tensor([[1000], [613]]) if masked else None
    whole = pool(x, mask)
    pool.eval_block_frames = 128  # 8 blocks, the last one partly padded
    torch.testing.assert_close(pool(x, mask), whole, atol=1e-5, rtol=1e-5)
