"""The training run behind ``python -m wespeaker_lap.bin.train``, step by named step.

:func:`train` takes a checked config (:func:`wespeaker_lap.utils.config.load_config`)
and runs it: :func:`prepare_data` (labels, the loader at the model's sample rate,
steps per epoch), :func:`build_model` (extractor + head, ``model_init``),
:func:`build_optimization` (loss, DDP, optimiser, lr and margin schedulers,
GradScaler), :func:`restore` (resume), then per epoch one
:func:`~wespeaker_lap.utils.executor.run_epoch`, a validation when one is due
(:mod:`wespeaker_lap.utils.validation`), the epoch's record in the training log
(:mod:`wespeaker_lap.utils.train_log`) and one :func:`save_epoch`. See
:mod:`wespeaker_lap.io.checkpoints` for the file contract and
:mod:`wespeaker_lap.utils.distributed` for the learning-rate scaling rule.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.dataset import (
    DatasetConfig,
    SpeakerDataLoader,
    build_train_loader,
    make_spk2id,
    parse_dataloader_args,
    parse_dataset_args,
)
from wespeaker_lap.frontend.fingerprint import (
    FINGERPRINT_FILE,
    absolute_frontend_args,
    compare_fingerprints,
    frontend_fingerprint,
    read_fingerprint,
    write_fingerprint,
)
from wespeaker_lap.frontend.lora import check_lora_checkpoint
from wespeaker_lap.frontend.precision import auto_dtype
from wespeaker_lap.io.checkpoints import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_weights,
    read_weights,
    save_weights,
)
from wespeaker_lap.io.files import read_scp
from wespeaker_lap.io.train_log import TRAIN_LOG, read_train_log, valid_epochs
from wespeaker_lap.models import build_extractor, build_projection
from wespeaker_lap.utils.config import save_config
from wespeaker_lap.utils.distributed import (
    DistInfo,
    all_gather_object,
    any_true,
    barrier,
    lr_scale_ratio,
    wrap_ddp,
)
from wespeaker_lap.utils.executor import (
    EpochOptions,
    SpeakerTrainModule,
    autocast_context,
    build_loss,
    make_grad_scaler,
    run_epoch,
)
from wespeaker_lap.utils.feature_cache import FeatureCache, build_feature_cache, rebuild
from wespeaker_lap.utils.schedulers import (
    L2SP,
    build_margin_scheduler,
    build_optimizer,
    build_scheduler,
    param_groups,
)
from wespeaker_lap.utils.train_log import TrainLog, peak_memory_mb
from wespeaker_lap.utils.training_state import (
    get_rng_state,
    link_final_model,
    load_training_state,
    prune_models,
    prune_states,
    remove_stale_tmp_files,
    resolve_resume,
    save_training_state,
    set_rng_state,
)
from wespeaker_lap.utils.validation import (
    ValidOptions,
    ValidResult,
    ValidSet,
    compare_digests,
    load_valid_set,
    parse_valid_args,
    run_validation,
)

logger = logging.getLogger("wespeaker_lap.train")


def seed_everything(seed: int) -> None:
    """Seed python, numpy (legacy global) and torch (all devices); nothing else."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator third-party code uses
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data
def read_train_label(cfg: Mapping[str, Any]) -> tuple[dict[str, int], int]:
    """``(spk2id, number of utterances)`` from ``train_label`` (utt2spk)."""
    if not cfg.get("train_label"):
        raise ConfigError("train_label (utt2spk of the training set) is required")
    if not cfg.get("train_data"):
        raise ConfigError("train_data (raw.list or shard.list) is required")
    for key in ("train_data", "train_label", "model_init", "noise_data", "reverb_data"):
        if cfg.get(key) and not Path(cfg[key]).is_file():
            raise FileNotFoundError(f"{key}: no such file: {cfg[key]}")
    utt2spk = read_scp(cfg["train_label"])
    if not utt2spk:
        raise ValueError(f"train_label {cfg['train_label']} is empty")
    spk2id = make_spk2id(utt2spk.values())
    if len(spk2id) < 2:
        raise ConfigError(f"train_label {cfg['train_label']}: {len(spk2id)} speaker; a speaker "
                          "classifier needs at least 2")
    return spk2id, len(utt2spk)


def compute_epoch_iter(num_utts: int, batch_size: int, accum_grad: int, sample_num: int,
                       info: DistInfo, loader: SpeakerDataLoader | None = None) -> int:
    """Optimiser steps per epoch, the same on every rank.

    Raw lists: the batches the loader will yield on this rank (``batches_per_epoch``,
    exact when no audio is bad) // accum_grad. Shard lists (tar sizes unknown until
    read): WeSpeaker's estimate, utterances // world_size // batch_size // accum_grad.
    The minimum over ranks is used, so every rank has the same schedule.
    """
    batches = loader.batches_per_epoch() if loader is not None else None
    if batches is None:
        batches = (sample_num or num_utts) // info.world_size // batch_size
    steps = min(all_gather_object(int(batches) // accum_grad, info))
    if steps < 1:
        raise ValueError(
            f"{num_utts} utterances give no full optimiser step with world_size "
            f"{info.world_size} x batch_size {batch_size} x accum_grad {accum_grad}"
        )
    return steps


@dataclass
class Validation:
    """The checked validation set and options (``vset`` None: no validation)."""

    vset: ValidSet | None
    opts: ValidOptions


def prepare_validation(cfg: Mapping[str, Any]) -> Validation:
    """Read and check ``valid_data`` / ``valid_trials`` against ``train_label``.

    Runs before anything is written: a bad set is a :class:`ConfigError` naming
    the file and line, or the overlapping speakers.
    """
    opts = parse_valid_args(cfg.get("valid_args"))
    if not cfg.get("valid_data"):
        if cfg.get("valid_args"):
            logger.warning("valid_args is set but valid_data is not: no validation")
        return Validation(None, opts)
    try:
        vset = load_valid_set(cfg["valid_data"], cfg["valid_trials"], cfg["train_label"], opts)
    except ValueError as e:  # ConfigError included: a bad input, named
        raise ConfigError(str(e)) from None
    logger.info("validation: %d utterances, %d trials of %s, after every %d epoch(s)",
                vset.num_utts, len(vset.trials), vset.trials_path, opts.every_n_epochs)
    return Validation(vset, opts)


@dataclass
class TrainData:
    """What :func:`prepare_data` gives: the loader and the sizes derived from the data."""

    loader: SpeakerDataLoader
    num_utts: int
    num_speakers: int
    num_class: int
    batch_size: int
    epoch_iter: int
    lr_scale: float
    #: the frozen SSL model's hidden states of the first feature_cache_epochs (None: off)
    feature_cache: FeatureCache | None = None


def prepare_data(cfg: Mapping[str, Any], info: DistInfo, sample_rate: int,
                 spk2id: Mapping[str, int], num_utts: int,
                 ds_cfg: DatasetConfig | None = None) -> TrainData:
    """The training loader at the model's ``sample_rate``, steps per epoch and the lr scale.

    ``ds_cfg``: ``dataset_args`` already parsed (else they are parsed here).
    """
    if ds_cfg is None:
        ds_cfg = parse_dataset_args(cfg["dataset_args"])
    dl_cfg = parse_dataloader_args(cfg["dataloader_args"])
    accum = int(cfg["accum_grad"])
    scale = lr_scale_ratio(info.world_size, dl_cfg.batch_size, accum,
                           cfg.get("lr_reference_batch"))
    loader = build_train_loader(
        cfg["train_data"], cfg["data_type"], spk2id, ds_cfg, dl_cfg, sample_rate=sample_rate,
        noise_list=cfg.get("noise_data"), rir_list=cfg.get("reverb_data"), seed=cfg["seed"],
        rank=info.rank, world_size=info.world_size, utt2spk=cfg["train_label"],
    )
    epoch_iter = compute_epoch_iter(num_utts, dl_cfg.batch_size, accum,
                                    ds_cfg.sample_num_per_epoch, info, loader)
    data = TrainData(loader, num_utts, len(spk2id), ds_cfg.num_classes(len(spk2id)),
                     dl_cfg.batch_size, epoch_iter, scale)
    logger.info("%d utterances, %d speakers -> %d classes; %d steps/epoch of %d x %d x %d; "
                "lr scale %.4g", num_utts, len(spk2id), data.num_class, epoch_iter,
                info.world_size, dl_cfg.batch_size, accum, scale)
    return data


# ---------------------------------------------------------------------------- model
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
    """Extractor (frontend + backend) with the training head added as ``.projection``.

    A constructor that refuses its arguments (a value of the wrong type the
    config schema could not see) is a :class:`ConfigError` naming the sections.
    """
    try:
        model = build_extractor(cfg)
        model.add_module("projection", build_projection(cfg, model.embed_dim, num_class))
    except TypeError as e:
        raise ConfigError(f"cannot build {cfg.get('model')} from frontend_args / model_args / "
                          f"projection_args: {e}") from None
    return model


def frontend_trainable(model: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in model.frontend.parameters())


def initialise(model: torch.nn.Module, cfg: Mapping[str, Any], resuming: bool) -> None:
    """Load ``model_init`` (phase 2/3 start from the previous phase) unless resuming."""
    if cfg.get("model_init") and not resuming:
        sd = read_weights(cfg["model_init"])
        check_lora_checkpoint(model, sd, where=f"model_init {cfg['model_init']}")
        adapt_projection(sd, model)
        report = load_weights(model, sd, strict=False, check_only=True)
        foreign = report.mismatched + report.unexpected + [
            k for k in report.missing if not k.startswith("frontend.")]  # SSL: from its own dir
        if foreign and cfg.get("model_init_strict", True):
            raise CheckpointError(
                f"model_init {cfg['model_init']}: these weights are another model's: "
                f"{len(report.mismatched)} mismatched {report.mismatched[:4]}, "
                f"{len(report.unexpected)} unexpected {report.unexpected[:4]}, missing "
                f"{[k for k in report.missing if not k.startswith('frontend.')][:4]}; "
                "load what fits anyway with --model_init_strict false")
        load_weights(model, sd, strict=False)
        logger.info("initialised from %s", cfg["model_init"])
    elif frontend_trainable(model) and not resuming:
        logger.warning("training the SSL model without model_init: phase 2/3 normally start "
                       "from the previous phase's avg_model.pt")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %.3fM (frontend %s)", n_train / 1e6,
                "trained" if frontend_trainable(model) else "frozen")


# ------------------------------------------------------------------------ optimiser
@dataclass
class Optimization:
    """The trained module (DDP-wrapped) and what steps it."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    margin_scheduler: Any
    scaler: Any


def build_optimization(cfg: Mapping[str, Any], model: torch.nn.Module, info: DistInfo,
                       data: TrainData) -> Optimization:
    """Loss (+ L2-SP), DDP, optimiser with layer-wise lr groups, lr/margin schedulers, scaler."""
    trainable = frontend_trainable(model)
    ft = cfg.get("finetune_args") or {}
    l2sp = None
    if float(ft.get("l2sp_alpha", 0.0)) > 0:
        if not trainable:
            raise ConfigError("finetune_args.l2sp_alpha needs a trainable frontend "
                              "(frontend_args.frozen: false)")
        l2sp = L2SP(model.frontend, float(ft["l2sp_alpha"]))
    criterion = build_loss(cfg["loss"], **cfg["loss_args"])
    module = SpeakerTrainModule(model, criterion, regularizer=l2sp)
    # A trained SSL model has parameters that get no gradient in a step (layers above the
    # last hidden state used, masked_spec_embed, layer drop): DDP must look for them.
    ddp_module = wrap_ddp(module, info, find_unused_parameters=trainable)

    groups = param_groups(model, layer_decay=float(ft.get("layer_decay", 1.0)),
                          frontend_lr_ratio=float(ft.get("frontend_lr_ratio", 1.0)))
    sched_args = dict(cfg["scheduler_args"])
    if "initial_lr" not in sched_args or "final_lr" not in sched_args:
        raise ConfigError("scheduler_args needs initial_lr and final_lr")
    optimizer = build_optimizer(cfg["optimizer"], groups, lr=float(sched_args["initial_lr"]),
                                **dict(cfg["optimizer_args"]))
    scheduler = build_scheduler(cfg["scheduler"], optimizer, num_epochs=int(cfg["num_epochs"]),
                                epoch_iter=data.epoch_iter, scale_ratio=data.lr_scale,
                                **sched_args)
    margin_scheduler = None
    if cfg["margin_update"]:
        margin_scheduler = build_margin_scheduler(cfg["margin_scheduler"], model.projection,
                                                  epoch_iter=data.epoch_iter,
                                                  **cfg["margin_update"])
    scaler = make_grad_scaler(info.device, cfg["enable_amp"], cfg["amp_dtype"])
    return Optimization(ddp_module, optimizer, scheduler, margin_scheduler, scaler)


# --------------------------------------------------------------------------- resume
def _check_resume_fits(model: torch.nn.Module, resume: tuple[int, Path | None, Path | None]
                       ) -> None:
    """The resume point's weights fit ``model`` (CheckpointError naming the file if not)."""
    _, state_file, weights_file = resume
    path = state_file if state_file is not None else weights_file
    load_weights(model, read_weights(path), strict=True, where=path, check_only=True)


def restore(resume: tuple[int, Path | None, Path | None] | None, model: torch.nn.Module,
            opt: Optimization) -> tuple[int, dict[str, Any] | None]:
    """Load a resume point; returns ``(first epoch to run, training state or None)``."""
    if resume is None:
        return 1, None
    done, state_file, weights_file = resume
    if state_file is None:
        check_lora_checkpoint(model, read_weights(weights_file), where=str(weights_file))
        load_weights(model, weights_file, strict=True)
        logger.warning("no state_%d.pt beside %s: resuming from the weights only (optimizer "
                       "and RNG start afresh, not an exact resume)", done, weights_file)
        return done + 1, None
    state = load_training_state(state_file)
    check_lora_checkpoint(model, state["model"], where=str(state_file))
    load_weights(model, state["model"], strict=True)
    opt.optimizer.load_state_dict(state["optimizer"])
    if state.get("scheduler") is not None:
        opt.scheduler.load_state_dict(state["scheduler"])
    if opt.margin_scheduler is not None and state.get("margin_scheduler") is not None:
        opt.margin_scheduler.load_state_dict(state["margin_scheduler"])
    if state.get("scaler") is not None:
        opt.scaler.load_state_dict(state["scaler"])
    logger.info("resuming after epoch %d from %s", done, state_file)
    return done + 1, state


def seed_training(cfg: Mapping[str, Any], info: DistInfo, state: Mapping[str, Any] | None
                  ) -> None:
    """Training randomness: per rank; restored exactly on resume."""
    seed_everything(int(cfg["seed"]) + info.rank)
    if state is not None:
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            logger.warning("state saved with %d ranks, now %d: RNG streams are reseeded",
                           len(rngs), info.world_size)


# ----------------------------------------------------------------------- recording
def _file_log(exp_dir: Path, info: DistInfo) -> logging.Handler | None:
    """Also log to exp_dir/train.log (rank 0); the caller removes the handler."""
    if not info.is_main:
        return None
    handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def record_config(cfg: Mapping[str, Any], exp_dir: Path, info: DistInfo, data: TrainData,
                  argv: Sequence[str] | None,
                  fingerprint: Mapping[str, Any] | None = None) -> None:
    """Save the merged config with the derived sizes as a comment header (rank 0), and the
    SSL model's fingerprint as ``frontend.json`` (see :mod:`wespeaker_lap.frontend.fingerprint`)."""
    if not info.is_main:
        return
    if fingerprint is not None:
        write_fingerprint(exp_dir, fingerprint)
    accum = int(cfg["accum_grad"])
    derived = (f"# derived: world_size={info.world_size} num_class={data.num_class} "
               f"epoch_iter={data.epoch_iter} "
               f"global_batch={info.world_size * data.batch_size * accum} "
               f"lr_scale={data.lr_scale:.6g}\n")
    save_config(cfg, exp_dir / "config.yaml", argv=argv, extra_header=derived)


def save_epoch(cfg: Mapping[str, Any], models_dir: Path, epoch: int, model: torch.nn.Module,
               opt: Optimization, data: TrainData, stats: Mapping[str, Any],
               info: DistInfo, valid_digest: Mapping[str, str] | None = None,
               valid_eers: Mapping[int, float] | None = None) -> None:
    """``model_{epoch}.pt`` (every interval and the last ``num_avg``), ``state_{epoch}.pt``.

    ``valid_digest``: the validation set's (kept in the state, checked on resume).
    ``valid_eers``: ``{epoch: validation EER}`` so far, for ``keep_best`` (rank 0).
    """
    rng_states = all_gather_object(get_rng_state(), info)
    if info.is_main:
        num_epochs, num_avg = int(cfg["num_epochs"]), int(cfg["num_avg"])
        if epoch % int(cfg["save_epoch_interval"]) == 0 or epoch > num_epochs - num_avg:
            save_weights(model, checkpoint_path(models_dir, epoch))
        extra: dict[str, Any] = {"loss": stats["loss"], "acc": stats["acc"]}
        if valid_digest is not None:
            extra["valid_digest"] = dict(valid_digest)
        save_training_state(
            checkpoint_path(models_dir, epoch, "state"), model=model, epoch=epoch,
            optimizer=opt.optimizer, scheduler=opt.scheduler,
            margin_scheduler=opt.margin_scheduler, scaler=opt.scaler, rng_states=rng_states,
            global_step=epoch * data.epoch_iter, extra=extra,
        )
        prune_states(models_dir, int(cfg["keep_last_states"]))
        if cfg.get("keep_best") is not None:
            prune_models(models_dir, valid_eers or {}, int(cfg["keep_best"]),
                         keep_after=num_epochs - num_avg, newest=epoch)
    barrier(info)


def epoch_record(epoch: int, stats: Mapping[str, Any], data: TrainData, info: DistInfo,
                 valid: ValidResult | None) -> dict[str, Any]:
    """The epoch's line of ``train_log.jsonl`` (see :mod:`wespeaker_lap.utils.train_log`)."""
    rec: dict[str, Any] = {
        "epoch": epoch, "global_step": epoch * data.epoch_iter, "loss": stats["loss"],
        "acc": stats["acc"], "lr": stats["lr"], "margin": stats["margin"],
        "grad_norm": stats["grad_norm"], "samples_per_s": stats["samples_per_s"],
        "train_seconds": stats["seconds"], "train_cpu_seconds": stats["cpu_seconds"],
        "peak_mem_mb": peak_memory_mb(info.device),
    }
    if valid is not None:
        rec["valid"] = valid.record()
        if valid.layer_use is not None:
            rec["layer_use"] = {"scores": valid.layer_use.tolist()}
    return rec


def check_resumed_validation(state: Mapping[str, Any] | None, validation: Validation,
                             log: TrainLog | None, epoch: int) -> None:
    """Warn (and note in the training log) when a resumed run validates on another set."""
    if state is None or validation.vset is None:
        return
    recorded = (state.get("extra") or {}).get("valid_digest")
    changed = compare_digests(recorded, validation.vset.digest)
    if not changed:
        return
    message = (f"the validation set changed since epoch {epoch} was saved: "
               f"{', '.join(changed)} of {validation.vset.data_dir} / "
               f"{validation.vset.trials_path} differ; validation EERs before and after "
               "the resume are not comparable")
    logger.warning("%s", message)
    if log is not None:
        log.note({"epoch": epoch, "message": message, "changed": changed})


# ---------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    """What :func:`train` leaves: the trained model (unwrapped) and the last epoch's stats."""

    model: torch.nn.Module
    stats: dict[str, Any]
    epoch: int


def resolve_amp(enable_amp: bool | str, amp_dtype: str, info: DistInfo) -> dict[str, Any]:
    """``enable_amp`` and ``amp_dtype`` as run: ``auto`` becomes bfloat16 autocast where
    :func:`auto_dtype` finds it faster on every rank (one vote, so that the ranks agree),
    else off, with a log line saying why."""
    if enable_amp != "auto":
        return {"enable_amp": bool(enable_amp), "amp_dtype": amp_dtype}
    dtype, why = auto_dtype(info.device)
    on = not any_true(dtype != torch.bfloat16, info)
    if info.is_main:
        logger.info("enable_amp auto: %s (%s%s)", "bfloat16 autocast" if on else "float32",
                    why, "" if on == (dtype == torch.bfloat16) else "; another rank votes "
                    "float32")
    return {"enable_amp": on, "amp_dtype": "bfloat16"}


def train(cfg: dict[str, Any], info: DistInfo | None = None,
          argv: Sequence[str] | None = None) -> TrainResult:
    """Run the training described by a checked config (see ``load_config``).

    ``info``: from ``init_distributed`` (default: a single CPU process).
    """
    info = DistInfo() if info is None else info
    cfg = {**cfg, **resolve_amp(cfg["enable_amp"], cfg["amp_dtype"], info)}
    exp_dir = Path(cfg["exp_dir"])
    models_dir = exp_dir / "models"
    checkpoint = cfg.get("checkpoint")
    if checkpoint is None and list_checkpoints(models_dir, "state"):
        raise FileExistsError(
            f"{models_dir} already holds a training run; resume it with --checkpoint latest "
            "or choose another exp_dir"
        )
    resume = resolve_resume(checkpoint, models_dir) if checkpoint is not None else None
    spk2id, num_utts = read_train_label(cfg)
    validation = prepare_validation(cfg)
    cfg = {**cfg, "frontend_args": absolute_frontend_args(cfg["frontend_args"])}
    fingerprint = None
    if info.is_main:  # a resume re-reads only SSL files changed since frontend.json was written
        fingerprint = frontend_fingerprint(
            cfg["frontend_args"], read_fingerprint(exp_dir) if resume is not None else None)
    if resume is not None and info.is_main:
        check_resumed_frontend(exp_dir, fingerprint)
    # Everything that can fail on a bad config runs before anything is written.
    seed_everything(int(cfg["seed"]))  # the model first, identical on every rank
    ds_cfg = parse_dataset_args(cfg["dataset_args"])
    model = build_model(cfg, ds_cfg.num_classes(len(spk2id))).to(info.device)
    # the frontend reports the sample rate the loader resamples to
    data = prepare_data(cfg, info, model.frontend.sample_rate, spk2id, num_utts, ds_cfg)
    initialise(model, cfg, resuming=resume is not None)
    if resume is not None:  # another model's checkpoint is refused before exp_dir is written
        _check_resume_fits(model, resume)
    opt = build_optimization(cfg, model, info, data)
    crop = ds_cfg.with_sample_rate(model.frontend.sample_rate).crop_samples
    data = replace(data, feature_cache=build_feature_cache(
        cfg, model, crop, data.batch_size, data.epoch_iter, info))
    if info.is_main:
        models_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            remove_stale_tmp_files(models_dir)
            remove_stale_tmp_files(exp_dir)
    barrier(info)
    handler = _file_log(exp_dir, info)
    try:
        return _run(cfg, info, argv, exp_dir, models_dir, resume, model, data, opt, fingerprint,
                    validation)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def check_resumed_frontend(exp_dir: Path, fingerprint: Mapping[str, Any] | None) -> None:
    """A resumed run must train on the SSL model its ``frontend.json`` records."""
    recorded = read_fingerprint(exp_dir)
    if recorded is None or fingerprint is None:
        return
    diffs = compare_fingerprints(recorded, fingerprint)
    if diffs:
        raise ConfigError(
            f"cannot resume {exp_dir}: its SSL model's {' and '.join(diffs)} differ from "
            f"{exp_dir / FINGERPRINT_FILE}: trained with "
            f"{recorded.get('model_name_or_path') or 'a random model from config'} (weights "
            f"sha256 {str(recorded.get('weights_sha256'))[:16]}), now "
            f"{fingerprint.get('model_name_or_path') or 'a random model from config'} (weights "
            f"sha256 {str(fingerprint.get('weights_sha256'))[:16]})"
        )


def _run(cfg, info: DistInfo, argv, exp_dir: Path, models_dir: Path, resume,
         model: torch.nn.Module, data: TrainData, opt: Optimization,
         fingerprint: Mapping[str, Any] | None, validation: Validation) -> TrainResult:
    start_epoch, state = restore(resume, model, opt)
    record_config(cfg, exp_dir, info, data, argv, fingerprint)
    log, valid_eers = None, {}
    if info.is_main:
        done = start_epoch - 1
        log = TrainLog(exp_dir, resume_epoch=done,
                       purge_step=done * data.epoch_iter + 1 if done else None)
        valid_eers = valid_epochs(read_train_log(exp_dir / TRAIN_LOG))
        check_resumed_validation(state, validation, log, done)
    seed_training(cfg, info, state)
    try:
        return _epochs(cfg, info, models_dir, start_epoch, model, data, opt, validation, log,
                       valid_eers)
    finally:
        if log is not None:
            log.close()


def _epochs(cfg, info: DistInfo, models_dir: Path, start_epoch: int, model: torch.nn.Module,
            data: TrainData, opt: Optimization, validation: Validation, log: TrainLog | None,
            valid_eers: dict[int, float]) -> TrainResult:

    epoch_opts = EpochOptions(
        epoch_iter=data.epoch_iter, accum_grad=int(cfg["accum_grad"]),
        grad_clip=cfg.get("grad_clip"), enable_amp=bool(cfg["enable_amp"]),
        amp_dtype=cfg["amp_dtype"], log_batch_interval=int(cfg["log_batch_interval"]),
    )
    num_epochs = int(cfg["num_epochs"])
    stats: dict = {}
    epoch = start_epoch - 1
    vset = validation.vset
    cache, cached_epochs = data.feature_cache, int(cfg["feature_cache_epochs"])
    train_module = getattr(opt.module, "module", opt.module)  # inside DDP, or not
    if cache is not None and info.is_main:
        logger.info("%s", cache.summary)
    if cache is not None and start_epoch > 1:  # a resume: the epochs recorded before it
        rebuild(cache, data.loader, model.frontend, range(1, min(cached_epochs, epoch) + 1),
                data.epoch_iter, epoch_opts.accum_grad,
                lambda: autocast_context(info.device, epoch_opts.enable_amp,
                                         epoch_opts.amp_dtype), info)
    for epoch in range(start_epoch, num_epochs + 1):
        data.loader.set_epoch(epoch)
        loader = data.loader
        if cache is not None and epoch > cached_epochs:  # the backend alone, on the pool
            loader = cache.batches(epoch, data.batch_size,
                                   data.epoch_iter * epoch_opts.accum_grad)
        train_module.feature_cache = cache if loader is data.loader else None
        stats = run_epoch(loader, opt.module, opt.optimizer, opt.scheduler,
                          opt.margin_scheduler, opt.scaler, epoch, epoch_opts, info, log=log)
        train_module.feature_cache = None
        valid = None
        if vset is not None and validation.opts.due(epoch, num_epochs):
            valid = run_validation(model, vset, validation.opts, info)
        if info.is_main:
            if valid is not None:
                valid_eers[epoch] = float(valid.metrics["eer"])
                stats["valid"] = valid.record()
                logger.info("epoch %d validation: EER %.3f%% | minDCF(0.01) %.4f | "
                            "minDCF(0.05) %.4f | %d utterances in %.1f s", epoch,
                            valid.metrics["eer"], valid.metrics["min_dcf_0.01"],
                            valid.metrics["min_dcf_0.05"], valid.num_utts, valid.seconds)
            # before the state file: a kill between the two re-runs the epoch, and the
            # resume drops this record again
            log.epoch(epoch_record(epoch, stats, data, info, valid))
        save_epoch(cfg, models_dir, epoch, model, opt, data, stats, info,
                   vset.digest if vset is not None else None, valid_eers)
    if info.is_main and checkpoint_path(models_dir, num_epochs).is_file():
        link_final_model(models_dir, num_epochs)
    return TrainResult(model, stats, epoch)
