"""Training building blocks: checkpoint files, averaging, lr schedules, layer decay, L2-SP."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from wespeaker_lap.bin import average_model
from wespeaker_lap.frontend import SSLFrontend
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import (
    STATE_FORMAT,
    checkpoint_path,
    list_checkpoints,
    load_weights,
    parse_checkpoint_path,
    read_weights,
    save_weights,
    trained_state_dict,
)
from wespeaker_lap.models import build_extractor, build_projection
from wespeaker_lap.utils.distributed import DistInfo, init_distributed, lr_scale_ratio
from wespeaker_lap.utils.schedulers import (
    L2SP,
    ExponentialDecrease,
    WarmupCosine,
    layer_depth,
    param_groups,
)
from wespeaker_lap.utils.training_state import (
    average_checkpoints,
    get_rng_state,
    link_final_model,
    load_training_state,
    prune_models,
    prune_states,
    resolve_resume,
    save_training_state,
    set_rng_state,
)


def tiny_extractor(frozen: bool = True, num_class: int = 5) -> nn.Module:
    cfg = {"frontend": "ssl", "frontend_args": {"config": tiny_ssl_config("wavlm"),
                                                "frozen": frozen},
           "model": "SUPERB_TSTP", "model_args": {"embed_dim": 8},
           "projection_args": {"project_type": "arc_margin"}}
    model = build_extractor(cfg)
    model.add_module("projection", build_projection(cfg, model.embed_dim, num_class))
    return model


# ----------------------------------------------------------------------- file names
def test_checkpoint_names_round_trip_and_reject_others(tmp_path):
    for kind in ("model", "state"):
        p = checkpoint_path(tmp_path / "models", 12, kind)
        assert p.name == f"{kind}_12.pt"
        assert parse_checkpoint_path(p) == (kind, 12)
    for bad in ("avg_model.pt", "final_model.pt", "model_x.pt", "model_1.pt.tmp", "model_-1.pt"):
        with pytest.raises(ValueError, match="not a checkpoint name"):
            parse_checkpoint_path(bad)
    with pytest.raises(ValueError):
        checkpoint_path(tmp_path, 1, "weights")


def test_list_and_prune_ignore_other_files(tmp_path):
    for e in (1, 2, 10):
        checkpoint_path(tmp_path, e).write_bytes(b"")
        checkpoint_path(tmp_path, e, "state").write_bytes(b"")
    (tmp_path / "avg_model.pt").write_bytes(b"")
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2, 10]  # numeric, not lexical
    prune_states(tmp_path, keep=2)
    assert [e for e, _ in list_checkpoints(tmp_path, "state")] == [2, 10]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2, 10]
    link_final_model(tmp_path, 10)
    assert (tmp_path / "final_model.pt").resolve() == checkpoint_path(tmp_path, 10).resolve()


# -------------------------------------------------------------------------- weights
def test_frozen_frontend_is_not_stored_and_loads_back(tmp_path):
    model = tiny_extractor(frozen=True)
    sd = trained_state_dict(model)
    assert sd and not any(k.startswith("frontend.") for k in sd)
    assert any(k.startswith("projection.") for k in sd)
    path = save_weights(model, tmp_path / "model_1.pt")
    other = tiny_extractor(frozen=True)
    report = load_weights(other, path, strict=True)
    assert not report.missing and not report.unexpected
    for k, v in trained_state_dict(other).items():
        assert torch.equal(v, sd[k]), k


def test_trained_frontend_is_stored():
    model = tiny_extractor(frozen=False)
    sd = trained_state_dict(model)
    enc = [k for k in sd if k.startswith("frontend.model.encoder.layers.")]
    cnn = [k for k in sd if k.startswith("frontend.model.feature_extractor.")]
    assert enc and cnn  # the whole SSL model: the frozen CNN too, so the file stands alone


def test_strict_load_names_what_does_not_fit(tmp_path):
    path = save_weights(tiny_extractor(num_class=5), tmp_path / "model_1.pt")
    other = tiny_extractor(num_class=7)
    with pytest.raises(ValueError, match="mismatched.*projection.weight"):
        load_weights(other, path, strict=True)
    report = load_weights(other, path, strict=False)
    assert report.mismatched and report.loaded


def test_training_state_round_trip_restores_rng(tmp_path):
    model = tiny_extractor()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 - the legacy global state is what is saved
    torch.manual_seed(3)
    rng = get_rng_state()
    expect = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    path = save_training_state(tmp_path / "state_3.pt", model=model, epoch=3, optimizer=opt,
                               rng_states=[rng])
    state = load_training_state(path)
    assert state["epoch"] == 3 and state["data_epoch"] == 4
    set_rng_state(state["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect  # noqa: NPY002
    assert set(read_weights(path)) == set(trained_state_dict(model))
    with pytest.raises(ValueError, match="not a training-state"):
        load_training_state(save_weights(model, tmp_path / "model_3.pt"))


def test_resume_resolution(tmp_path):
    m = tmp_path / "models"
    m.mkdir()
    checkpoint_path(m, 4).write_bytes(b"")
    assert resolve_resume(checkpoint_path(m, 4), m) == (4, None, checkpoint_path(m, 4))
    for e in (4, 5):  # "latest" reads the newest state to check it is intact
        torch.save({"format": STATE_FORMAT, "epoch": e, "model": {}, "optimizer": {}, "rng": []},
                   checkpoint_path(m, e, "state"))
    assert resolve_resume(checkpoint_path(m, 4), m)[:2] == (4, checkpoint_path(m, 4, "state"))
    assert resolve_resume("latest", m)[:2] == (5, checkpoint_path(m, 5, "state"))
    with pytest.raises(FileNotFoundError):
        resolve_resume(checkpoint_path(m, 9), m)


def test_average_model_cli_averages_the_last_n(tmp_path):
    models = tmp_path / "models"
    for e in range(1, 5):
        save_weights({"w": torch.full((2,), float(e)), "n": torch.tensor(e)},
                     checkpoint_path(models, e))
    dst = models / "avg_model.pt"
    assert average_model.main(["--dst_model", str(dst), "--src_path", str(models),
                               "--num", "3"]) == 0
    avg = read_weights(dst)
    assert avg["w"].tolist() == [3.0, 3.0] and int(avg["n"]) == 4
    used = average_checkpoints(models, 2, dst, max_epoch=2)
    assert [p.name for p in used] == ["model_1.pt", "model_2.pt"]
    assert read_weights(dst)["w"].tolist() == [1.5, 1.5]
    assert average_model.main(["--dst_model", str(dst), "--src_path", str(models),
                               "--num", "9"]) == 1


def test_average_model_best_valid_averages_the_lowest_eer_epochs(tmp_path, capsys):
    models = tmp_path / "models"
    for e in range(1, 6):
        save_weights({"w": torch.full((2,), float(e))}, checkpoint_path(models, e))
    eers = {1: 9.0, 2: 3.0, 3: 5.0, 4: 3.0, 5: 7.0}  # a tie: the later epoch first
    (tmp_path / "train_log.jsonl").write_text("".join(
        json.dumps({"kind": "epoch", "epoch": e, "valid": {"eer": v}}) + "\n"
        for e, v in eers.items()) + '{"kind": "step", "epo')  # a torn last line
    dst = models / "avg_model.pt"
    argv = ["--dst_model", str(dst), "--src_path", str(models), "--select", "best_valid"]
    assert average_model.main([*argv, "--num", "2"]) == 0
    assert read_weights(dst)["w"].tolist() == [3.0, 3.0]  # epochs 2 and 4
    assert average_model.main([*argv, "--num", "3"]) == 0
    assert read_weights(dst)["w"].tolist() == [3.0, 3.0]  # 2, 3, 4
    checkpoint_path(models, 4).unlink()  # pruned by keep_best: the next best is taken
    assert average_model.main([*argv, "--num", "2"]) == 0
    assert read_weights(dst)["w"].tolist() == [2.5, 2.5]  # 2 and 3
    assert average_model.main([*argv, "--num", "5"]) == 1
    (tmp_path / "train_log.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1}) + "\n")
    assert average_model.main([*argv, "--num", "1"]) == 1
    assert "has no validation record" in capsys.readouterr().err


def test_prune_models_keeps_best_last_window_and_newest(tmp_path):
    models = tmp_path / "models"
    for e in range(1, 8):
        save_weights({"w": torch.zeros(1)}, checkpoint_path(models, e))
    gone = prune_models(models, {1: 5.0, 2: 1.0, 3: 4.0, 4: 2.0, 5: 3.0}, keep_best=2,
                        keep_after=5, newest=7)
    assert sorted(p.name for p in gone) == ["model_1.pt", "model_3.pt", "model_5.pt"]
    assert [e for e, _ in list_checkpoints(models)] == [2, 4, 6, 7]


# ---------------------------------------------------------------------- lr schedules
def test_warmup_cosine_shape():
    s = WarmupCosine(None, num_epochs=10, epoch_iter=10, initial_lr=1e-3, final_lr=1e-5,
                     warm_up_epoch=1, scale_ratio=2.0)
    lrs = [s.step(i) for i in range(100)]
    assert lrs[0] == 0.0 and math.isclose(lrs[10], 2e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # then falls
    assert math.isclose(s.lr_at(100), 2e-5) and math.isclose(s.lr_at(55), 2 * (1e-5 + 0.5 * (
        1e-3 - 1e-5)))


def _old_warmup_cosine_lr(it, initial, final, warm_up_iter, max_iter, start, scale):
    """WarmupCosine.lr_at as it was before the formula moved to wespeaker_lap.lr_schedule."""
    if it < warm_up_iter:
        lr = start + (initial - start) * (it / warm_up_iter)
    else:
        frac = min(1.0, (it - warm_up_iter) / max(1, max_iter - warm_up_iter))
        lr = final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * frac))
    return lr * scale


@pytest.mark.parametrize("epochs, epoch_iter, warm_up_epoch, start, scale", [
    (10, 10, 1, 0.0, 2.0), (40, 37, 6, 1e-5, 1.0), (3, 5, 0, 0.0, 0.25), (2, 4, 1.5, 0.0, 1.0),
])
def test_warmup_cosine_sequence_is_the_old_one(epochs, epoch_iter, warm_up_epoch, start, scale):
    s = WarmupCosine(None, epochs, epoch_iter, initial_lr=0.1, final_lr=5e-5,
                     warm_up_epoch=warm_up_epoch, warm_up_start_lr=start, scale_ratio=scale)
    total = epochs * epoch_iter
    old = [_old_warmup_cosine_lr(it, 0.1, 5e-5, s.warm_up_iter, total, start, scale)
           for it in range(total + 3)]
    assert [s.step(it) for it in range(total + 3)] == pytest.approx(old, rel=1e-12, abs=1e-18)


def test_exponential_decrease_matches_wespeaker_formula():
    s = ExponentialDecrease(None, 4, 25, initial_lr=0.1, final_lr=5e-5, warm_up_epoch=1,
                            scale_ratio=4.0)
    for it in (0, 10, 25, 60, 99):
        coeff = 1 + 3 * it / 25 if it < 25 else 4.0
        assert math.isclose(s.lr_at(it), coeff * 0.1 * math.exp(it / 100 * math.log(5e-4)))
    z = ExponentialDecrease(None, 4, 25, 0.1, 5e-5, warm_up_epoch=1, warm_from_zero=True)
    assert z.lr_at(0) == 0.0


def test_scheduler_writes_scaled_lrs_and_resumes():
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1]}, {"params": [p2], "lr_scale": 0.5}], lr=1.0)
    s = WarmupCosine(opt, 2, 5, initial_lr=1.0, final_lr=0.1)
    s.step(3)
    assert opt.param_groups[0]["lr"] == 2 * opt.param_groups[1]["lr"] == s.get_lr()
    t = WarmupCosine(opt, 2, 5, initial_lr=1.0, final_lr=0.1)
    t.load_state_dict(s.state_dict())
    assert t.step() == s.step()


def test_lr_scaling_rule():
    assert lr_scale_ratio(4, 128, 1, 512) == 1.0
    assert lr_scale_ratio(2, 64, 4, 512) == 1.0
    assert lr_scale_ratio(1, 64, 1, 512) == 0.125
    assert lr_scale_ratio(8, 32, 1, None) == 1.0


def test_single_process_without_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo() and not info.distributed and info.is_main


# --------------------------------------------------------------- layer-wise lr decay
def test_layer_depths():
    assert layer_depth("encoder.layers.0.attention.k_proj.weight", 12) == 1
    assert layer_depth("encoder.layers.11.final_layer_norm.bias", 12) == 12
    assert layer_depth("encoder.pos_conv_embed.conv.bias", 12) == 0
    assert layer_depth("encoder.layer_norm.weight", 24, stable_layer_norm=True) == 24
    assert layer_depth("encoder.layer_norm.weight", 12) == 0


def test_param_groups_decay_per_layer_and_skip_the_frozen_cnn():
    model = tiny_extractor(frozen=False)  # 2 Transformer layers
    groups = param_groups(model, layer_decay=0.5, frontend_lr_ratio=0.1, weight_decay=1e-5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    fe = model.frontend.model
    assert all(scale[id(p)] == 1.0 for p in model.backend.parameters())
    assert scale[id(model.projection.weight)] == 1.0
    assert math.isclose(scale[id(fe.encoder.layers[1].attention.q_proj.weight)], 0.1)
    assert math.isclose(scale[id(fe.encoder.layers[0].attention.q_proj.weight)], 0.05)
    assert math.isclose(scale[id(fe.feature_projection.projection.weight)], 0.025)
    assert not any(id(p) in scale for p in fe.feature_extractor.parameters())
    assert all(g["weight_decay"] == 1e-5 for g in groups)
    assert groups[0]["name"] == "backend"
    frozen = param_groups(tiny_extractor(frozen=True), layer_decay=0.5)
    assert [g["name"] for g in frozen] == ["backend"]


def test_l2sp_pulls_toward_the_reference():
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"), frozen=False)
    reg = L2SP(fe, alpha=2.0)
    assert float(reg().detach()) == 0.0
    w = fe.model.encoder.layers[0].attention.q_proj.weight
    with torch.no_grad():
        w.add_(0.5)
    loss = reg()
    assert math.isclose(float(loss.detach()), 0.5 * 2.0 * 0.25 * w.numel(), rel_tol=1e-5)
    loss.backward()
    assert torch.allclose(w.grad, torch.full_like(w, 2.0 * 0.5))
    assert all(p.grad is None for p in fe.model.feature_extractor.parameters())
