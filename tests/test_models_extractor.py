"""Extractor (tiny random SSL frontend + backend) and every model config in conf/."""

from pathlib import Path

import pytest
import torch
import yaml

from wespeaker_lap.frontend import SSLFrontend
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.models import (
    SPEAKER_MODELS,
    SpeakerEmbeddingExtractor,
    build_extractor,
    build_projection,
)
from wespeaker_lap.utils.schedulers import MarginScheduler

CONF = Path(__file__).resolve().parents[1] / "conf"
HEADER = ("exp_dir", "gpus", "num_avg", "enable_amp", "seed", "num_epochs",
          "save_epoch_interval", "log_batch_interval")
# the training recipe every phase-1 model config shares (a fair comparison)
RECIPE = ("dataloader_args", "dataset_args", "projection_args", "margin_scheduler",
          "margin_update", "loss", "loss_args", "optimizer", "optimizer_args", "scheduler",
          "scheduler_args", "num_epochs", "enable_amp")


def model_configs():
    out = {}
    for path in sorted(CONF.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if isinstance(cfg, dict) and "model" in cfg:
            out[path.name] = cfg
    return out


CONFIGS = model_configs()


def tiny_config(model="LAP_ASTP", model_args=None, **frontend_args):
    return {
        "frontend": "ssl",
        "frontend_args": {"config": tiny_ssl_config("wavlm", num_hidden_layers=3), **frontend_args},
        "model": model,
        "model_args": {"feat_dim": -1, "num_layers": -1, "lap_dim": 16, "heads": 4,
                       **(model_args or {})},
    }


def wavs(lengths=(16000, 9000)):
    x = torch.randn(len(lengths), max(lengths)) * 0.1
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    return x, torch.tensor(lengths)


def test_extractor_maps_waveforms_to_embeddings():
    ext = build_extractor(tiny_config()).eval()
    x, n = wavs()
    emb = ext(x, n)
    assert emb.shape == (2, ext.embed_dim) == (2, 192)
    alone = ext(x[1:, : n[1]], n[1:])
    torch.testing.assert_close(emb[1:], alone, rtol=1e-4, atol=1e-4)


def test_extractor_returns_lap_scores_per_head_frame_and_layer():
    ext = build_extractor(tiny_config()).eval()
    x, n = wavs()
    _, scores = ext(x, n, return_layer_scores=True)
    assert scores.shape == (2, 4, 49, 4)


def test_gradients_reach_backend_but_never_frozen_frontend():
    ext = build_extractor(tiny_config()).train()
    x, n = wavs()
    ext(x, n).square().mean().backward()
    assert all(p.grad is None for p in ext.frontend.parameters())
    assert all(p.grad is not None for p in ext.backend.parameters())


def test_trainable_frontend_receives_gradients():
    ext = build_extractor(tiny_config(frozen=False)).train()
    x, n = wavs()
    ext(x, n).square().mean().backward()
    assert any(p.grad is not None for p in ext.frontend.model.encoder.parameters())


def test_state_dict_holds_only_backend_when_frontend_frozen():
    ext = build_extractor(tiny_config())
    keys = list(ext.state_dict())
    assert keys and all(k.startswith("backend.") for k in keys)
    trainable = build_extractor(tiny_config(frozen=False))
    assert any(k.startswith("frontend.") for k in trainable.state_dict())


def test_saved_backend_reloads_into_extractor_built_from_referenced_ssl_path(tmp_path):
    torch.manual_seed(0)
    SSLFrontend(config=tiny_ssl_config("wavlm", num_hidden_layers=3)).save_pretrained(
        tmp_path / "ssl"
    )
    cfg = tiny_config()
    cfg["frontend_args"] = {"model_name_or_path": str(tmp_path / "ssl")}
    ext = build_extractor(cfg).eval()
    torch.save(ext.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(1)  # a different random backend init
    other = build_extractor(cfg).eval()
    other.load_state_dict(torch.load(tmp_path / "model.pt"))  # strict
    x, n = wavs()
    torch.testing.assert_close(ext(x, n), other(x, n))


def test_load_state_dict_still_rejects_unexpected_keys():
    ext = build_extractor(tiny_config())
    sd = ext.state_dict()
    sd["backend.bogus"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="bogus"):
        ext.load_state_dict(sd)


def test_frontend_weights_left_out_when_extractor_is_a_submodule():
    ext = build_extractor(tiny_config())
    wrapper = torch.nn.Module()
    wrapper.add_module("extractor", ext)
    wrapper.add_module("projection", torch.nn.Linear(2, 2))
    sd = wrapper.state_dict()
    assert not any(k.startswith("extractor.frontend.") for k in sd)
    wrapper.load_state_dict(sd)


def test_extractor_accepts_any_frontend_with_the_contract():
    class Fake(torch.nn.Module):
        def forward(self, wavs, lengths):
            return torch.randn(wavs.shape[0], 3, 7, 8), torch.full((wavs.shape[0],), 7)

    ext = SpeakerEmbeddingExtractor(Fake(), SPEAKER_MODELS["SUPERB_TSTP"](8, 3, embed_dim=5))
    assert ext(torch.randn(2, 100)).shape == (2, 5)


def test_build_extractor_names_missing_model_key():
    cfg = tiny_config()
    del cfg["model"]
    with pytest.raises(ValueError, match="config has no 'model' entry"):
        build_extractor(cfg)


# ------------------------------------------------------------------ conf/
def test_every_registry_name_has_a_config_in_conf():
    assert set(SPEAKER_MODELS) <= {cfg["model"] for cfg in CONFIGS.values()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_extractor_and_head_with_tiny_frontend(name):
    cfg = dict(CONFIGS[name])
    assert all(key in cfg for key in HEADER), f"{name}: WeSpeaker header incomplete"
    assert cfg["model_args"]["feat_dim"] == -1 and cfg["model_args"]["num_layers"] == -1
    cfg["frontend_args"] = {"config": tiny_ssl_config("wavlm", num_hidden_layers=3)}
    ext = build_extractor(cfg).train()
    x, n = wavs((8000, 6000))
    emb = ext(x, n)
    assert emb.shape == (2, cfg["model_args"]["embed_dim"])
    head = build_projection(cfg, ext.embed_dim, num_class=10)
    sched = MarginScheduler(head, epoch_iter=5, **cfg["margin_update"])
    sched.step()
    head(emb, torch.tensor([1, 2])).logsumexp(1).mean().backward()
    assert head.final_margin == cfg["margin_update"]["final_margin"]


def test_phase1_configs_share_one_training_recipe():
    phase1 = {
        name: cfg for name, cfg in CONFIGS.items()
        if not cfg.get("model_init") and cfg["frontend_args"].get("frozen", True)
    }
    assert len(phase1) >= len(SPEAKER_MODELS)
    first = next(iter(phase1.values()))
    for name, cfg in phase1.items():
        for key in RECIPE:
            assert cfg.get(key) == first.get(key), f"{name}: {key} differs"
        assert cfg["exp_dir"] == f"exp/{Path(name).stem}"
