"""SSLFrontend.forward_windows: long audio in overlapping windows, frames tiled exactly once."""

import pytest
import torch

from wespeaker_lap.frontend import SSLFrontend
from wespeaker_lap.frontend.testing import tiny_ssl_config


def _padded_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    n = int(lengths.max())
    mask = torch.arange(n)[None, :] < lengths[:, None]
    return torch.randn(len(lengths), n, generator=g) * mask, lengths


def _per_utterance(chunks, b):
    """Concatenate each utterance's valid chunk frames: list of (L, T_i, D)."""
    return [torch.cat([h[i, :, : int(n[i])] for h, n in chunks], dim=1) for i in range(b)]


@pytest.mark.parametrize("family", ["wavlm", "wav2vec2", "wav2vec2-bert"])
def test_an_utterance_shorter_than_the_window_is_one_chunk_equal_to_forward(family):
    fe = SSLFrontend(config=tiny_ssl_config(family))
    wavs, lens = _padded_batch([16000, 9000])
    chunks = list(fe.forward_windows(wavs, lens, window=2.0, overlap=0.5))
    assert len(chunks) == 1
    whole = fe(wavs, lens)
    assert torch.equal(chunks[0][0], whole[0]) and torch.equal(chunks[0][1], whole[1])


@pytest.mark.parametrize("family", ["wavlm", "hubert", "wav2vec2-bert"])
def test_chunks_tile_every_utterance_exactly_once(family):
    fe = SSLFrontend(config=tiny_ssl_config(family))
    wavs, lens = _padded_batch([53000, 16000, 31234])
    chunks = list(fe.forward_windows(wavs, lens, window=1.0, overlap=0.3))
    total = fe.frame_lengths(lens)
    assert sum(n for _, n in chunks).tolist() == total.tolist()
    for h, n in chunks:
        assert h.shape[:2] == (3, fe.num_layers) and h.shape[3] == fe.hidden_size
        assert h.shape[2] == int(n.max())
        for i in range(3):
            assert torch.all(h[i, :, int(n[i]):] == 0)
    # the last window of a long utterance ends at its end, so no chunk is a short stub
    assert min(int(n[0]) for _, n in chunks) > 5


def test_kept_frames_are_the_window_forward_at_the_right_place():
    """Rebuild the first utterance by hand from per-window forwards and the documented cuts."""
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"))
    wavs, lens = _padded_batch([40000])
    got = _per_utterance(list(fe.forward_windows(wavs, lens, window=1.0, overlap=0.4)), 1)[0]
    win, step, hop = 16000, 9600, 320  # 0.6 s step = 30 frames
    starts = [0, 9600, 19200, 24000]  # the last window moved back to end at 40000
    ends = [s // hop + int(fe.frame_lengths(torch.tensor([win]))[0]) for s in starts]
    cuts = [0] + [(starts[k + 1] // hop + ends[k]) // 2 for k in range(3)] + [ends[-1]]
    assert step % hop == 0 and ends[-1] == int(fe.frame_lengths(lens)[0]) == got.shape[1]
    for k, s in enumerate(starts):
        h, _ = fe(wavs[:, s : s + win])
        a, b = cuts[k] - s // hop, cuts[k + 1] - s // hop
        torch.testing.assert_close(got[:, cuts[k] : cuts[k + 1]], h[0, :, a:b], atol=0, rtol=0)


def test_windowed_batch_equals_each_utterance_alone():
    fe = SSLFrontend(config=tiny_ssl_config("wav2vec2"))
    wavs, lens = _padded_batch([45000, 12000, 30001])
    batch = _per_utterance(list(fe.forward_windows(wavs, lens, window=1.0, overlap=0.2)), 3)
    for i in range(3):
        alone = list(fe.forward_windows(wavs[i : i + 1, : lens[i]], lens[i : i + 1],
                                        window=1.0, overlap=0.2))
        torch.testing.assert_close(batch[i], _per_utterance(alone, 1)[0], atol=2e-5, rtol=1e-4)


def test_the_model_never_sees_more_than_one_window():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"))
    seen = []
    fe.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    wavs, lens = _padded_batch([80000, 50000])
    list(fe.forward_windows(wavs, lens, window=1.0, overlap=0.25))
    assert seen and max(s[-1] for s in seen) <= 16000 and max(s[0] for s in seen) <= 2


def test_bad_window_settings_are_rejected():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"))
    wavs, lens = _padded_batch([40000])
    for window, overlap in [(0.01, 0.0), (1.0, 1.0), (1.0, -0.1)]:
        with pytest.raises(ValueError, match="window"):
            list(fe.forward_windows(wavs, lens, window=window, overlap=overlap))
