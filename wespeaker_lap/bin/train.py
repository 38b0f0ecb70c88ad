"""Train a speaker embedding extractor (frontend + backend + AAM head).

Single process (CPU or one GPU)::

    python -m wespeaker_lap.bin.train --config conf/lap_astp_wavlm_base_plus.yaml \\
        --exp_dir exp/lap --train_data data/vox2_dev/shard.list \\
        --train_label data/vox2_dev/utt2spk --data_type shard --num_epochs 40

One or many nodes: the same arguments after ``torchrun --nnodes N
--nproc_per_node G --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT -m
wespeaker_lap.bin.train`` (one process per GPU with NCCL; CPU processes use gloo).

Every option except ``--config`` and ``--device`` is a config override in the
config's grammar (``--model_args.heads 8``, ``--num_epochs=3``); values are
YAML scalars. The whole config is checked before any work: an unknown key is
an error naming it. ``--checkpoint exp/x/models/model_10.pt`` (or
``state_10.pt``, or ``latest``) resumes after epoch 10 exactly;
``--model_init`` starts phase 2/3 from the previous phase's weights.

Outputs under ``exp_dir``: ``config.yaml`` (merged config; versions, command
line and derived sizes as comments), ``train.log``, ``models/model_{epoch}.pt``
(every ``save_epoch_interval`` epochs and the last ``num_avg``),
``models/state_{epoch}.pt`` (resume, the newest ``keep_last_states``),
``models/final_model.pt`` and ``tensorboard/`` when TensorBoard is installed.
See :mod:`wespeaker_lap.utils.checkpoint` for the file contract and
:mod:`wespeaker_lap.utils.distributed` for the learning-rate scaling rule.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wespeaker_lap.utils.checkpoint import (
    checkpoint_path,
    get_rng_state,
    link_final_model,
    list_checkpoints,
    load_training_state,
    load_weights,
    prune_states,
    read_weights,
    resolve_resume,
    save_training_state,
    save_weights,
    set_rng_state,
)
from wespeaker_lap.utils.config import ConfigError, load_config, save_config
from wespeaker_lap.utils.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    cleanup,
    init_distributed,
    lr_scale_ratio,
    wrap_ddp,
)
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("wespeaker_lap.train")


def seed_everything(seed: int) -> None:
    """Seed python, numpy (legacy global) and torch (all devices); nothing else."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator third-party code uses
    torch.manual_seed(seed)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --config CONFIG [--device {auto,cpu,cuda}] [--key value ...]",
        allow_abbrev=False,  # every other option is a config override, never a prefix
    )
    p.add_argument("--config", required=True, help="training config (YAML, WeSpeaker grammar)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: one GPU per process when CUDA is available, else CPU")
    args, rest = p.parse_known_args(argv)
    return args, rest


# --------------------------------------------------------------------------- pieces
def read_train_label(cfg: Mapping[str, Any]) -> tuple[dict[str, int], int]:
    """``(spk2id, number of utterances)`` from ``train_label`` (utt2spk)."""
    from wespeaker_lap.dataset import make_spk2id
    from wespeaker_lap.io.files import read_scp

    if not cfg.get("train_label"):
        raise ConfigError("train_label (utt2spk of the training set) is required")
    if not cfg.get("train_data"):
        raise ConfigError("train_data (raw.list or shard.list) is required")
    utt2spk = read_scp(cfg["train_label"])
    if not utt2spk:
        raise ValueError(f"train_label {cfg['train_label']} is empty")
    return make_spk2id(utt2spk.values()), len(utt2spk)


def compute_epoch_iter(num_utts: int, cfg: Mapping[str, Any], info: DistInfo,
                       loader: Any = None) -> int:
    """Optimiser steps per epoch, the same on every rank.

    Raw lists: the batches the loader will yield on this rank (``batches_per_epoch``,
    exact when no audio is bad) // accum_grad. Shard lists (tar sizes unknown until
    read): WeSpeaker's estimate, utterances // world_size // batch_size // accum_grad.
    The minimum over ranks is used, so every rank has the same schedule.
    """
    accum = int(cfg["accum_grad"])
    if "batch_size" not in (cfg.get("dataloader_args") or {}):
        raise ConfigError("dataloader_args.batch_size (per process) is required")
    batch = int(cfg["dataloader_args"]["batch_size"])
    batches = loader.batches_per_epoch() if loader is not None else None
    if batches is None:
        sample_num = int((cfg.get("dataset_args") or {}).get("sample_num_per_epoch") or 0)
        batches = (sample_num or num_utts) // info.world_size // batch
    steps = min(all_gather_object(int(batches) // accum, info))
    if steps < 1:
        raise ValueError(
            f"{num_utts} utterances give no full optimiser step with world_size "
            f"{info.world_size} x batch_size {batch} x accum_grad {accum}"
        )
    return steps


def adapt_projection(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Fit a checkpoint's head to fewer classes (phase 1 with speed perturbation -> phase 2).

    With speed perturbation the labels are ``spk + k * S`` (block 0 = speed 1.0) and
    an AAM head's rows are class-major, so the first ``rows`` of a ``n * rows`` head
    are exactly the original speakers. Other mismatches are left to load_weights.
    """
    own = model.state_dict()
    for k in [k for k in sd if k.startswith("projection.")]:
        if k in own and sd[k].dim() >= 1 and own[k].dim() == sd[k].dim():
            n_file, n_own = sd[k].shape[0], own[k].shape[0]
            if n_file > n_own and n_file % n_own == 0 and sd[k].shape[1:] == own[k].shape[1:]:
                logger.info("model_init: %s keeps the first %d of %d rows (speed block 1.0)",
                            k, n_own, n_file)
                sd[k] = sd[k][:n_own].clone()


def build_model(cfg: Mapping[str, Any], num_class: int) -> torch.nn.Module:
    """Extractor (frontend + backend) with the training head added as ``.projection``."""
    from wespeaker_lap.models import build_extractor, build_projection

    model = build_extractor(cfg)
    model.add_module("projection", build_projection(cfg, model.embed_dim, num_class))
    return model


def tensorboard_writer(exp_dir: Path, info: DistInfo):
    """A SummaryWriter on rank 0 when TensorBoard is installed, else None."""
    if not info.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("TensorBoard not installed: scalars go to train.log only")
        return None
    return SummaryWriter(log_dir=str(exp_dir / "tensorboard"))


def _file_log(exp_dir: Path, info: DistInfo) -> logging.Handler | None:
    """Also log to exp_dir/train.log (rank 0); the caller removes the handler."""
    if not info.is_main:
        return None
    handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


# ---------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    """What :func:`train` leaves: the trained model (unwrapped) and the last epoch's stats."""

    model: torch.nn.Module
    stats: dict[str, Any]
    epoch: int


def train(cfg: dict[str, Any], info: DistInfo | None = None,
          argv: Sequence[str] | None = None) -> TrainResult:
    """Run the training described by a checked config (see :func:`load_config`).

    ``info``: from :func:`init_distributed` (default: a single CPU process).
    """
    info = DistInfo() if info is None else info
    exp_dir = Path(cfg["exp_dir"])
    models_dir = exp_dir / "models"
    checkpoint = cfg.get("checkpoint")
    if checkpoint is None and list_checkpoints(models_dir, "state"):
        raise FileExistsError(
            f"{models_dir} already holds a training run; resume it with --checkpoint latest "
            "or choose another exp_dir"
        )
    resume = resolve_resume(checkpoint, models_dir) if checkpoint is not None else None
    if info.is_main:
        models_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    handler = _file_log(exp_dir, info)
    try:
        return _train(cfg, info, argv, exp_dir, models_dir, resume)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _train(cfg, info, argv, exp_dir: Path, models_dir: Path, resume) -> TrainResult:
    from wespeaker_lap.dataset import build_train_loader, num_classes
    from wespeaker_lap.utils.executor import (
        EpochOptions,
        SpeakerTrainModule,
        build_loss,
        make_grad_scaler,
        run_epoch,
    )
    from wespeaker_lap.utils.schedulers import (
        L2SP,
        MARGIN_SCHEDULERS,
        build_optimizer,
        build_scheduler,
        param_groups,
    )

    # ---- data
    spk2id, num_utts = read_train_label(cfg)
    num_class = num_classes(len(spk2id), cfg["dataset_args"])
    accum = int(cfg["accum_grad"])
    if "batch_size" not in cfg["dataloader_args"]:
        raise ConfigError("dataloader_args.batch_size (per process) is required")
    batch_size = int(cfg["dataloader_args"]["batch_size"])
    scale = lr_scale_ratio(info.world_size, batch_size, accum, cfg.get("lr_reference_batch"))
    loader = build_train_loader(
        cfg["train_data"], cfg["data_type"], spk2id, cfg["dataset_args"], cfg["dataloader_args"],
        noise_list=cfg.get("noise_data"), rir_list=cfg.get("reverb_data"), seed=cfg["seed"],
        rank=info.rank, world_size=info.world_size,
    )
    epoch_iter = compute_epoch_iter(num_utts, cfg, info, loader)
    logger.info("%d utterances, %d speakers -> %d classes; %d steps/epoch of %d x %d x %d; "
                "lr scale %.4g", num_utts, len(spk2id), num_class, epoch_iter, info.world_size,
                batch_size, accum, scale)

    # ---- model: identical initialisation on every rank
    seed_everything(int(cfg["seed"]))
    model = build_model(cfg, num_class).to(info.device)
    frontend_trainable = any(p.requires_grad for p in model.frontend.parameters())
    ft = cfg.get("finetune_args") or {}
    l2sp = None
    if float(ft.get("l2sp_alpha", 0.0)) > 0:
        if not frontend_trainable:
            raise ConfigError("finetune_args.l2sp_alpha needs a trainable frontend "
                              "(frontend_args.frozen: false)")
        l2sp = L2SP(model.frontend, float(ft["l2sp_alpha"]))
    if cfg.get("model_init") and resume is None:
        sd = read_weights(cfg["model_init"])
        adapt_projection(sd, model)
        load_weights(model, sd, strict=False)
        logger.info("initialised from %s", cfg["model_init"])
    elif frontend_trainable and resume is None:
        logger.warning("training the SSL model without model_init: phase 2/3 normally start "
                       "from the previous phase's avg_model.pt")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %.3fM (frontend %s)", n_train / 1e6,
                "trained" if frontend_trainable else "frozen")

    criterion = build_loss(cfg["loss"], **cfg["loss_args"])
    module = SpeakerTrainModule(model, criterion, regularizer=l2sp)
    # A trained SSL model has parameters that get no gradient in a step (layers above the
    # last hidden state used, masked_spec_embed, layer drop): DDP must look for them.
    ddp_module = wrap_ddp(module, info, find_unused_parameters=frontend_trainable)

    opt_args = dict(cfg["optimizer_args"])
    groups = param_groups(model, layer_decay=float(ft.get("layer_decay", 1.0)),
                          frontend_lr_ratio=float(ft.get("frontend_lr_ratio", 1.0)))
    sched_args = dict(cfg["scheduler_args"])
    if "initial_lr" not in sched_args or "final_lr" not in sched_args:
        raise ConfigError("scheduler_args needs initial_lr and final_lr")
    optimizer = build_optimizer(cfg["optimizer"], groups, lr=float(sched_args["initial_lr"]),
                                **opt_args)
    scheduler = build_scheduler(cfg["scheduler"], optimizer, num_epochs=int(cfg["num_epochs"]),
                                epoch_iter=epoch_iter, scale_ratio=scale, **sched_args)
    margin_scheduler = None
    if cfg["margin_update"]:
        margin_scheduler = MARGIN_SCHEDULERS[cfg["margin_scheduler"]](
            model.projection, epoch_iter=epoch_iter, **cfg["margin_update"])
    scaler = make_grad_scaler(info.device, cfg["enable_amp"], cfg["amp_dtype"])

    start_epoch = 1
    state = None
    if resume is not None:
        done, state_file, weights_file = resume
        if state_file is not None:
            state = load_training_state(state_file)
            load_weights(model, state["model"], strict=True)
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if margin_scheduler is not None and state.get("margin_scheduler") is not None:
                margin_scheduler.load_state_dict(state["margin_scheduler"])
            if state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
            logger.info("resuming after epoch %d from %s", done, state_file)
        else:
            load_weights(model, weights_file, strict=True)
            logger.warning("no state_%d.pt beside %s: resuming from the weights only (optimizer "
                           "and RNG start afresh, not an exact resume)", done, weights_file)
        start_epoch = done + 1

    # ---- record what runs
    if info.is_main:
        derived = (f"# derived: world_size={info.world_size} num_class={num_class} "
                   f"epoch_iter={epoch_iter} global_batch={info.world_size * batch_size * accum} "
                   f"lr_scale={scale:.6g}\n")
        save_config(cfg, exp_dir / "config.yaml", argv=argv, extra_header=derived)
    writer = tensorboard_writer(exp_dir, info)

    # ---- randomness of training: per rank; restored exactly on resume
    seed_everything(int(cfg["seed"]) + info.rank)
    if state is not None:
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            logger.warning("state saved with %d ranks, now %d: RNG streams are reseeded",
                           len(rngs), info.world_size)

    opts = EpochOptions(
        epoch_iter=epoch_iter, accum_grad=accum, grad_clip=cfg.get("grad_clip"),
        enable_amp=bool(cfg["enable_amp"]), amp_dtype=cfg["amp_dtype"],
        log_batch_interval=int(cfg["log_batch_interval"]),
    )
    num_epochs, num_avg = int(cfg["num_epochs"]), int(cfg["num_avg"])
    interval = int(cfg["save_epoch_interval"])
    stats: dict = {}
    epoch = start_epoch - 1
    for epoch in range(start_epoch, num_epochs + 1):
        loader.set_epoch(epoch)
        stats = run_epoch(loader, ddp_module, optimizer, scheduler, margin_scheduler, scaler,
                          epoch, opts, info, writer=writer)
        rng_states = all_gather_object(get_rng_state(), info)
        if info.is_main:
            if epoch % interval == 0 or epoch > num_epochs - num_avg:
                save_weights(model, checkpoint_path(models_dir, epoch))
            save_training_state(
                checkpoint_path(models_dir, epoch, "state"), model=model, epoch=epoch,
                optimizer=optimizer, scheduler=scheduler, margin_scheduler=margin_scheduler,
                scaler=scaler, rng_states=rng_states, global_step=epoch * epoch_iter,
                extra={"loss": stats["loss"], "acc": stats["acc"]},
            )
            prune_states(models_dir, int(cfg["keep_last_states"]))
        barrier(info)
    if info.is_main and checkpoint_path(models_dir, num_epochs).is_file():
        link_final_model(models_dir, num_epochs)
    if writer is not None:
        writer.close()
    return TrainResult(model, stats, epoch)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv)
    from wespeaker_lap.utils.distributed import env_world

    rank = env_world()[0]
    setup_logging(rank=rank)
    try:
        cfg = load_config(args.config, overrides)  # before any work: a bad key stops here
    except (ConfigError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    info = init_distributed(args.device, cfg.get("gpus"))
    try:
        train(cfg, info, argv)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
