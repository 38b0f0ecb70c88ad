"""Training end to end on a generated corpus: loss, phases, resume, torchrun, configs in conf/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import (
    REPO,
    child_env,
    free_port,
    make_corpus,
    run_torchrun,
    run_train,
    tiny_config,
    torchrun_cmd,
    write_config,
)

from wespeaker_lap.bin import train as train_bin
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import checkpoint_path, list_checkpoints, read_weights
from wespeaker_lap.utils.config import load_config
from wespeaker_lap.utils.trainer import build_model, seed_everything, train
from wespeaker_lap.utils.training_state import load_training_state

COMMON = REPO / "tests" / "train_helpers.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _load(tmp_path, cfg, *overrides):
    return load_config(write_config(tmp_path / "config.yaml", cfg), list(overrides))


def _weights(model, prefix):
    """Parameters under ``prefix`` (state_dict() leaves a frozen frontend out)."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(prefix)}


# ------------------------------------------------------------------ single process
def test_tiny_model_loss_goes_down(tmp_path, corpus):
    cfg = _load(tmp_path, tiny_config(tmp_path / "exp", *corpus, num_epochs=4,
                                      keep_last_states=4))
    result = train(cfg)
    states = list_checkpoints(tmp_path / "exp" / "models", "state")
    losses = [load_training_state(p)["extra"]["loss"] for _, p in states]
    assert len(losses) == 4 and result.epoch == 4
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "exp" / "config.yaml").is_file()
    assert (tmp_path / "exp" / "models" / "final_model.pt").resolve().name == "model_4.pt"


def test_bad_config_key_fails_before_any_work(tmp_path, corpus, monkeypatch, capsys):
    def boom(*a, **k):  # pragma: no cover - reached only if the check fails
        raise AssertionError("training started despite a bad config")

    monkeypatch.setattr(train_bin, "train", boom)
    monkeypatch.setattr(train_bin, "init_distributed", boom)
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "exp", *corpus))
    assert train_bin.main(["--config", str(config), "--model_args.n_heads", "8"]) == 2
    err = capsys.readouterr().err
    assert "model_args.n_heads" in err and "did you mean 'heads'" in err
    bad = tiny_config(tmp_path / "exp", *corpus)
    bad["optimizer_args"]["weight_decy"] = 0.1
    assert train_bin.main(["--config", str(write_config(tmp_path / "b.yaml", bad))]) == 2
    assert "optimizer_args.weight_decy" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_existing_run_is_not_overwritten_without_checkpoint(tmp_path, corpus):
    cfg = _load(tmp_path, tiny_config(tmp_path / "exp", *corpus, num_epochs=1))
    train(cfg)
    with pytest.raises(FileExistsError, match="--checkpoint latest"):
        train(cfg)


def test_phase1_never_moves_ssl_weights_phase2_does(tmp_path, corpus):
    cfg1 = _load(tmp_path, tiny_config(tmp_path / "p1", *corpus, num_epochs=1))
    seed_everything(cfg1["seed"])
    ref = build_model(cfg1, num_class=4)  # train() builds from the same seed
    p1 = train(cfg1)
    before = _weights(ref, "frontend.")
    after1 = _weights(p1.model, "frontend.")
    assert before and all(torch.equal(before[k], after1[k]) for k in before)
    assert not any(k.startswith("frontend.") for k in read_weights(
        checkpoint_path(tmp_path / "p1" / "models", 1)))

    cfg2 = tiny_config(tmp_path / "p2", *corpus, num_epochs=1,
                       model_init=str(checkpoint_path(tmp_path / "p1" / "models", 1)),
                       finetune_args={"layer_decay": 0.8, "l2sp_alpha": 1e-3},
                       scheduler_args={"initial_lr": 1e-3, "final_lr": 1e-4})
    cfg2["frontend_args"]["frozen"] = False
    p2 = train(_load(tmp_path, cfg2))
    after2 = _weights(p2.model, "frontend.")
    moved = [k for k in before if not torch.equal(before[k], after2[k])]
    assert any(".encoder.layers.0." in k for k in moved)
    assert any(".encoder.layers.1." in k for k in moved)
    assert not any(".feature_extractor." in k for k in moved)  # the CNN stays frozen
    stored = read_weights(checkpoint_path(tmp_path / "p2" / "models", 1))
    assert any(k.startswith("frontend.model.encoder.layers.") for k in stored)


def test_gradient_accumulation_and_clipping_run(tmp_path, corpus):
    cfg = _load(tmp_path, tiny_config(tmp_path / "exp", *corpus, num_epochs=1, accum_grad=2,
                                      grad_clip=1.0, optimizer="SGD",
                                      optimizer_args={"momentum": 0.9, "nesterov": True,
                                                      "weight_decay": 1e-4},
                                      scheduler="ExponentialDecrease",
                                      scheduler_args={"warm_up_epoch": 0}))
    result = train(cfg)
    assert result.stats["steps"] == 24 // 4 // 2


def test_cpu_bf16_autocast_trains(tmp_path, corpus):
    cfg = _load(tmp_path, tiny_config(tmp_path / "exp", *corpus, num_epochs=1, enable_amp=True))
    assert torch.isfinite(torch.tensor(train(cfg).stats["loss"]))


@pytest.mark.parametrize("bf16_faster", [True, False])
def test_enable_amp_auto_follows_the_probe_and_logs_why(tmp_path, corpus, monkeypatch, caplog,
                                                        bf16_faster):
    from wespeaker_lap.utils import trainer

    seen = {}

    def fake_auto(device):
        return (torch.bfloat16, "fake probe: faster") if bf16_faster else \
            (torch.float32, "fake probe: slower")

    real = trainer.EpochOptions

    def spy(**kw):
        seen.update(kw)
        return real(**kw)

    monkeypatch.setattr(trainer, "auto_dtype", fake_auto)
    monkeypatch.setattr(trainer, "EpochOptions", spy)
    cfg = _load(tmp_path, tiny_config(tmp_path / "exp", *corpus, num_epochs=1,
                                      enable_amp="auto"))
    with caplog.at_level("INFO", logger="wespeaker_lap.train"):
        train(cfg)
    want = "bfloat16 autocast (fake probe: faster)" if bf16_faster else \
        "float32 (fake probe: slower)"
    assert f"enable_amp auto: {want}" in caplog.text
    assert seen["enable_amp"] is bf16_faster and seen["amp_dtype"] == "bfloat16"


# ------------------------------------------------------------------- resume exactly
@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path, corpus):
    full = write_config(tmp_path / "full.yaml", tiny_config(tmp_path / "full", *corpus))
    run_train(full)

    cut = write_config(tmp_path / "cut.yaml", tiny_config(tmp_path / "cut", *corpus))
    models = tmp_path / "cut" / "models"
    cmd = [sys.executable, "-m", "wespeaker_lap.bin.train", "--config", str(cut), "--device",
           "cpu"]
    proc = subprocess.Popen(cmd, env=child_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint_path(models, 1, "state").exists() and proc.poll() is None:
        assert time.time() < deadline, "epoch 1 never finished"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for e, p in list_checkpoints(models) + list_checkpoints(models, "state"):
        if e > 1:  # the kill came late: forget epoch 2, as if it had been cut short
            p.unlink()
    assert not any(p.name.endswith(".tmp") for p in models.iterdir() if p.name != "1")
    run_train(cut, "--checkpoint", str(checkpoint_path(models, 1)))

    a = read_weights(checkpoint_path(tmp_path / "full" / "models", 2))
    b = read_weights(checkpoint_path(models, 2))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa = load_training_state(checkpoint_path(tmp_path / "full" / "models", 2, "state"))
    sb = load_training_state(checkpoint_path(models, 2, "state"))
    assert sa["extra"] == sb["extra"] and torch.equal(sa["rng"][0]["torch"], sb["rng"][0]["torch"])


# --------------------------------------------------------------------- distributed
@pytest.mark.slow
def test_torchrun_two_cpu_processes_average_gradients_like_one(tmp_path, corpus):
    cfg = tiny_config(tmp_path / "exp", *corpus)
    cfg["model_args"].update(score_dropout=0.0, frame_dropout=0.0)  # no randomness per rank
    config = write_config(tmp_path / "c.yaml", cfg)
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    subprocess.run([sys.executable, str(COMMON), "grad_step", str(config), str(one), "2"],
                   env=child_env(), cwd=REPO, check=True, capture_output=True, timeout=120)
    # a failure or a hang names the rank that did not finish, with both ranks' logs
    run_torchrun(2, [str(COMMON), "grad_step", str(config), str(two), "1"], tmp_path / "logs")
    a, b = torch.load(one), torch.load(two)
    seed_everything(0)
    init = dict(build_model(load_config(config), num_class=4).named_parameters())
    # parameters only: BatchNorm running statistics legitimately differ (per-rank batches)
    moved = [k for k in a if k in init and not torch.equal(a[k], init[k].detach())]
    assert len(moved) > 5 and "projection.weight" in moved
    for k in moved:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


# a rank that never finishes (one that waits on a peer that will not come) and one that does
_HANG_SCRIPT = """import os, time
rank = int(os.environ["RANK"])
print(f"rank {rank}: started", flush=True)
if rank == 1:
    time.sleep(600)
print(f"rank {rank}: finished", flush=True)
"""


@pytest.mark.slow
def test_a_torchrun_that_hangs_is_killed_and_its_stuck_rank_named_with_both_logs(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(_HANG_SCRIPT)
    with pytest.raises(AssertionError) as e:
        run_torchrun(2, [str(script)], tmp_path / "logs", timeout=20)
    msg = str(e.value)
    assert "still ran after 20 s" in msg and "rank(s) [1] of 2 did not finish" in msg
    assert "rank 0: finished" in msg and "rank 1: started" in msg
    alive = [p.parent.name for p in Path("/proc").glob("[0-9]*/cmdline")
             if str(script).encode() in _read_bytes(p)]
    assert not alive, f"processes of {script} still run: {alive}"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_two_node_rendezvous_on_loopback_completes_an_epoch(tmp_path, corpus):
    # phase 2 under DDP: trained SSL layers (the top one unused: layers [0, 1]), L2-SP,
    # gradient accumulation with no_sync, clipping
    cfg = tiny_config(tmp_path / "exp", *corpus, num_epochs=1, accum_grad=2, grad_clip=5.0,
                      finetune_args={"layer_decay": 0.8, "l2sp_alpha": 0.01})
    cfg["frontend_args"].update(frozen=False, layers=[0, 1])
    config = write_config(tmp_path / "c.yaml", cfg)
    endpoint = f"127.0.0.1:{free_port()}"
    args = ["-m", "wespeaker_lap.bin.train", "--config", str(config), "--device", "cpu"]
    procs = [subprocess.Popen(torchrun_cmd(1, *args, nnodes=2, endpoint=endpoint),
                              env=child_env(), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    assert "steps/epoch of 2 x 4 x 2" in "".join(outs)  # world size 2 over the two launchers
    assert checkpoint_path(tmp_path / "exp" / "models", 1).is_file()
    derived = (tmp_path / "exp" / "config.yaml").read_text().splitlines()[2]
    assert "world_size=2" in derived


# ----------------------------------------------------------------- configs in conf/
def _training_configs() -> list[Path]:
    out = []
    for p in sorted((REPO / "conf").glob("*.yaml")):
        raw = yaml.safe_load(p.read_text()) or {}
        if "train_args" in raw:  # pretrain_ssl's configs use their own grammar
            continue
        out.append(p)
    return out


def _tiny_frontend_for(raw: dict) -> dict:
    """The config's frontend swapped for a tiny random one of the same family."""
    args = dict(raw.get("frontend_args") or {})
    family = "wavlm"
    name = str(args.get("model_name_or_path") or "")
    for fam in ("hubert", "wav2vec2", "data2vec"):
        if fam in name:
            family = "data2vec-audio" if fam == "data2vec" else fam
    args["model_name_or_path"] = None
    args["config"] = tiny_ssl_config(family, stable_layer_norm="large" in name.lower())
    if args.get("layers") is not None:
        args["layers"] = [i for i in args["layers"] if i <= 2] or None
    return args


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):  # recipes drop utterances < 1 s; inter-top-5 needs > 5 classes
    return make_corpus(tmp_path_factory.mktemp("long"), num_spk=6, num_utt=1, seconds=1.5)


@pytest.mark.parametrize("path", _training_configs(), ids=lambda p: p.name)
def test_every_config_builds_and_trains_one_step(tmp_path, long_corpus, path):
    corpus = long_corpus
    raw = yaml.safe_load(path.read_text())
    over = ["--exp_dir", str(tmp_path / "exp"), "--train_data", str(corpus[0]),
            "--train_label", str(corpus[1]), "--data_type", "raw", "--num_epochs", "1",
            "--model_init", "null", "--noise_data", "null", "--reverb_data", "null",
            "--dataloader_args.batch_size", "4", "--dataloader_args.num_workers", "0",
            "--dataset_args.aug_prob", "0.0", "--dataset_args.sample_num_per_epoch", "4",
            "--accum_grad", "1", "--lr_reference_batch", "null", "--gpus", "null",
            "--frontend_args", yaml.safe_dump(_tiny_frontend_for(raw), default_flow_style=True)]
    if "dataloader_args" in raw and raw["dataloader_args"].get("prefetch_factor") is not None:
        over += ["--dataloader_args.prefetch_factor", "null"]
    warm = (raw.get("scheduler_args") or {}).get("warm_up_epoch")
    if warm:  # the same warm-up fraction of the one epoch run here
        over += ["--scheduler_args.warm_up_epoch", str(float(warm) / raw["num_epochs"])]
    cfg = load_config(path, over)
    result = train(cfg)
    assert result.stats["steps"] == 1
    assert torch.isfinite(torch.tensor(result.stats["loss"]))
