"""feature_cache_epochs: the frozen SSL model's hidden states of the first epochs, reused.

The recorded epochs train exactly as without the cache, the later ones never run the SSL
model, a resume rebuilds the pool and ends where an uninterrupted run does, and the
cases it cannot serve are refused before any work."""

from __future__ import annotations

import logging

import pytest
import torch
from train_helpers import make_corpus, tiny_config, write_config

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.io.checkpoints import checkpoint_path, list_checkpoints, read_weights
from wespeaker_lap.utils.config import load_config
from wespeaker_lap.utils.feature_cache import FeatureCache
from wespeaker_lap.utils.trainer import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _cfg(tmp_path, name, corpus, **overrides):
    cfg = tiny_config(tmp_path / name, *corpus, **{"keep_last_states": 4, **overrides})
    return load_config(write_config(tmp_path / f"{name}.yaml", cfg), [])


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _CountCalls:
    """Counts the frozen SSL model's forward calls (a forward hook)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, module, args, output):
        self.calls += 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_recorded_epochs_equal_plain_training_and_later_ones_skip_the_ssl_model(
        tmp_path, corpus, monkeypatch, caplog, dtype):
    """In bfloat16 the pool holds bfloat16 (the frozen model's values, half the memory)."""
    caplog.set_level(logging.INFO, logger="wespeaker_lap.train")
    fe = {"frontend_args": {"dtype": dtype}}
    plain = train(_cfg(tmp_path, "plain", corpus, num_epochs=3, **fe))
    counter = _CountCalls()
    import wespeaker_lap.utils.trainer as trainer_mod

    real = trainer_mod.build_feature_cache

    def spy(cfg, model, *args):  # count the SSL forwards of the training epochs
        cache = real(cfg, model, *args)
        model.frontend.register_forward_hook(counter)
        pools.append(cache)
        return cache

    pools = []
    monkeypatch.setattr(trainer_mod, "build_feature_cache", spy)
    cached = train(_cfg(tmp_path, "cached", corpus, num_epochs=3, feature_cache_epochs=1, **fe))
    assert pools[0].hidden.dtype == getattr(torch, dtype) and pools[0].out_dtype == torch.float32
    models_p, models_c = tmp_path / "plain" / "models", tmp_path / "cached" / "models"
    # epoch 1 is recorded: the same weights as training without the cache
    assert _same(read_weights(checkpoint_path(models_p, 1)),
                 read_weights(checkpoint_path(models_c, 1)))
    # epochs 2-3 drew from the pool: other batches, so other weights, and no SSL forward
    steps = plain.stats["steps"]  # an epoch's steps (batch 4, accum 1: a forward a step)
    assert steps > 1 and counter.calls == steps  # epoch 1 only
    assert cached.stats["steps"] == steps  # an epoch on the pool has the epoch's steps
    assert not _same(read_weights(checkpoint_path(models_p, 3)),
                     read_weights(checkpoint_path(models_c, 3)))
    assert plain.epoch == cached.epoch == 3
    assert "feature cache: the frozen SSL model's hidden states of epochs 1-1 " in caplog.text
    assert torch.isfinite(torch.tensor(cached.stats["loss"]))


def test_resume_on_the_pool_rebuilds_it_and_ends_as_an_uninterrupted_run(tmp_path, corpus):
    train(_cfg(tmp_path, "full", corpus, num_epochs=3, feature_cache_epochs=2))
    cut = tmp_path / "cut" / "models"
    train(_cfg(tmp_path, "cut", corpus, num_epochs=3, feature_cache_epochs=2))
    for e, p in list_checkpoints(cut) + list_checkpoints(cut, "state"):
        if e == 3:  # as if killed during epoch 3, the first on the pool
            p.unlink()
    train(_cfg(tmp_path, "cut", corpus, num_epochs=3, feature_cache_epochs=2,
               checkpoint=str(checkpoint_path(cut, 2))))
    assert _same(read_weights(checkpoint_path(tmp_path / "full" / "models", 3)),
                 read_weights(checkpoint_path(cut, 3)))


@pytest.mark.parametrize("overrides, message", [
    ({"feature_cache_epochs": 2, "num_epochs": 2}, "leaves no epoch to train on the cache"),
    ({"feature_cache_epochs": 1, "feature_cache_max_gb": 1e-6},
     "over feature_cache_max_gb 1e-06: cache fewer epochs or raise the limit"),
    ({"feature_cache_epochs": 1, "frontend_args": {"frozen": False}},
     "feature_cache_epochs needs a frozen SSL model"),
])
def test_what_the_cache_cannot_serve_is_refused_before_any_work(tmp_path, corpus, overrides,
                                                                message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        train(_cfg(tmp_path, "bad", corpus, **overrides))
    assert not (tmp_path / "bad" / "models").exists()


@pytest.mark.parametrize("value", [-1, 1.5, "two"])
def test_a_bad_feature_cache_value_names_the_key(tmp_path, corpus, value):
    with pytest.raises(ConfigError, match="feature_cache_epochs"):
        _cfg(tmp_path, "bad", corpus, feature_cache_epochs=value)


def test_pool_draws_each_crop_once_an_epoch_in_a_seeded_order():
    cache = FeatureCache(10, (2, 5, 3), torch.bfloat16, seed=3, out_dtype=torch.float32)
    for start in (0, 4):
        hidden = torch.arange(start, start + 4, dtype=torch.float32).view(4, 1, 1, 1)
        cache.add(hidden.expand(4, 2, 5, 3), torch.full((4,), 5), torch.arange(start, start + 4))
    cache.add(torch.full((2, 2, 3, 3), 8.0), torch.tensor([3, 3]), torch.tensor([8, 9]))
    assert cache.count == 10
    batches = list(cache.batches(epoch=4, batch_size=5, num_batches=2))
    labels = torch.cat([b["labels"] for b in batches])
    assert sorted(labels.tolist()) == list(range(10))  # every crop once
    for b in batches:  # each crop's hidden states are its own, padded to the batch's longest
        assert b["hidden"].shape[2] == int(b["frame_lengths"].max())
        assert b["hidden"].dtype == torch.float32
        assert all(float(h[0, 0, 0]) == min(int(y), 8)
                   for h, y in zip(b["hidden"], b["labels"], strict=True))
    again = torch.cat([b["labels"] for b in cache.batches(4, 5, 2)])
    other = torch.cat([b["labels"] for b in cache.batches(5, 5, 2)])
    assert torch.equal(labels, again) and not torch.equal(labels, other)
    # an epoch longer than the pool goes on with the next permutation
    assert len(torch.cat([b["labels"] for b in cache.batches(4, 4, 4)])) == 16
    with pytest.raises(RuntimeError, match="exceed its capacity 10"):
        cache.add(torch.zeros(1, 2, 5, 3), torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="does not fit"):
        FeatureCache(2, (2, 5, 3), torch.float32, seed=0).add(
            torch.zeros(1, 2, 6, 3), torch.tensor([6]), torch.tensor([0]))
