"""Optimisers, per-iteration learning-rate and margin schedules, layer-wise lr decay, L2-SP.

Schedulers are stepped once per *optimiser step* with the global iteration
``(epoch - 1) * epoch_iter + i`` (WeSpeaker's convention), so resuming at an
epoch boundary reproduces the curve exactly. Each parameter group's lr is the
schedule's lr times the group's ``lr_scale`` (1 unless :func:`param_groups`
set it for layer-wise decay).

``scale_ratio`` (filled in by train.py, see
:func:`wespeaker_lap.utils.distributed.lr_scale_ratio`) multiplies the whole curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from wespeaker_lap.lr_schedule import warmup_cosine
from wespeaker_lap.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer", {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
})


def build_optimizer(name: str, params: Iterable[Any], lr: float, **kwargs: Any
                    ) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name](params, lr=lr, **kwargs)``; unknown names list the valid ones."""
    return OPTIMIZERS.build(name, params, lr=lr, **kwargs)


# ------------------------------------------------------------------------ lr curves
class LRScheduler:
    """Base: a learning rate as a pure function of the iteration, written to the optimiser.

    Args:
        optimizer: its groups get ``lr = lr_at(iter) * group.get("lr_scale", 1)``.
        num_epochs, epoch_iter: the curve spans ``num_epochs * epoch_iter`` steps.
        initial_lr, final_lr: start (after warm-up) and end of the curve.
        warm_up_epoch: length of the warm-up in epochs (may be fractional).
        scale_ratio: multiplies the curve (lr scaling with the global batch).
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, num_epochs: int,
                 epoch_iter: int, initial_lr: float, final_lr: float,
                 warm_up_epoch: float = 0.0, scale_ratio: float = 1.0):
        assert num_epochs >= 1 and epoch_iter >= 1, (
            f"num_epochs and epoch_iter must be >= 1, got {num_epochs}, {epoch_iter}"
        )
        assert initial_lr > 0 and final_lr > 0, (
            f"learning rates must be > 0, got initial_lr={initial_lr}, final_lr={final_lr}"
        )
        assert 0 <= warm_up_epoch <= num_epochs, (
            f"warm_up_epoch must be in [0, num_epochs={num_epochs}], got {warm_up_epoch}"
        )
        self.optimizer = optimizer
        self.max_iter = int(num_epochs * epoch_iter)
        self.warm_up_iter = int(round(warm_up_epoch * epoch_iter))
        self.initial_lr = float(initial_lr)
        self.final_lr = float(final_lr)
        self.scale_ratio = float(scale_ratio)
        self.current_iter = 0
        self.last_lr = self.lr_at(0)

    def lr_at(self, it: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, current_iter: int | None = None) -> float:
        """Set the optimiser's lrs for ``current_iter`` (default: the next one); return the lr."""
        if current_iter is not None:
            self.current_iter = int(current_iter)
        self.last_lr = self.lr_at(self.current_iter)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.last_lr * group.get("lr_scale", 1.0)
        self.current_iter += 1
        return self.last_lr

    def get_lr(self) -> float:
        """The base lr last set (groups with an ``lr_scale`` get it scaled)."""
        return self.last_lr

    def state_dict(self) -> dict[str, Any]:
        return {"current_iter": self.current_iter, "last_lr": self.last_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_iter = int(state["current_iter"])
        self.last_lr = float(state["last_lr"])


class WarmupCosine(LRScheduler):
    """Linear warm-up from ``warm_up_start_lr`` to ``initial_lr``, then cosine to ``final_lr``
    (:func:`wespeaker_lap.lr_schedule.warmup_cosine`, the formula pre-training shares).

    >>> s = WarmupCosine(None, num_epochs=10, epoch_iter=10, initial_lr=1e-3,
    ...                  final_lr=1e-5, warm_up_epoch=1)
    >>> round(s.lr_at(5), 6), s.lr_at(10), round(s.lr_at(100), 6)
    (0.0005, 0.001, 1e-05)
    """

    def __init__(self, optimizer, num_epochs, epoch_iter, initial_lr, final_lr,
                 warm_up_epoch: float = 0.0, warm_up_start_lr: float = 0.0,
                 scale_ratio: float = 1.0):
        self.warm_up_start_lr = float(warm_up_start_lr)
        super().__init__(optimizer, num_epochs, epoch_iter, initial_lr, final_lr,
                         warm_up_epoch, scale_ratio)

    def lr_at(self, it: int) -> float:
        lr = warmup_cosine(it, self.initial_lr, self.warm_up_iter, self.max_iter,
                           final_lr=self.final_lr, start_lr=self.warm_up_start_lr)
        return lr * self.scale_ratio


class ExponentialDecrease(LRScheduler):
    """WeSpeaker's schedule: ``initial_lr * (final_lr / initial_lr) ** (it / max_iter)``.

    During warm-up the multiplier ``scale_ratio`` ramps linearly from 1 (from 0
    with ``warm_from_zero``) to its value, as in WeSpeaker's multi-process warm-up.

    >>> s = ExponentialDecrease(None, 10, 10, initial_lr=0.1, final_lr=0.001,
    ...                         warm_up_epoch=0)
    >>> round(s.lr_at(50), 6), round(s.lr_at(100), 6)
    (0.01, 0.001)
    """

    def __init__(self, optimizer, num_epochs, epoch_iter, initial_lr, final_lr,
                 warm_up_epoch: float = 6.0, scale_ratio: float = 1.0,
                 warm_from_zero: bool = False):
        self.warm_from_zero = bool(warm_from_zero)
        super().__init__(optimizer, num_epochs, epoch_iter, initial_lr, final_lr,
                         warm_up_epoch, scale_ratio)

    def lr_at(self, it: int) -> float:
        coeff = self.scale_ratio
        if it < self.warm_up_iter:
            frac = it / self.warm_up_iter
            if self.warm_from_zero:
                coeff = self.scale_ratio * frac
            elif self.scale_ratio > 1:
                coeff = 1.0 + (self.scale_ratio - 1.0) * frac
        frac = min(1.0, it / self.max_iter)
        return coeff * self.initial_lr * math.exp(frac * math.log(self.final_lr / self.initial_lr))


SCHEDULERS: Registry[type[LRScheduler]] = Registry("scheduler", {
    "WarmupCosine": WarmupCosine,
    "ExponentialDecrease": ExponentialDecrease,
})


def build_scheduler(name: str, optimizer, **kwargs: Any) -> LRScheduler:
    """``SCHEDULERS[name](optimizer, **kwargs)``; unknown names list the valid ones."""
    return SCHEDULERS.build(name, optimizer, **kwargs)


# --------------------------------------------------------------- layer-wise decay
def _ssl_frontends(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules that look like an SSLFrontend: a ``frozen`` flag and ``.model.encoder.layers``."""
    out = []
    for name, m in model.named_modules():
        enc = getattr(getattr(m, "model", None), "encoder", None)
        if enc is not None and isinstance(getattr(enc, "layers", None), nn.ModuleList) \
                and hasattr(m, "frozen"):
            if not any(name.startswith(n + ".") for n, _ in out):
                out.append((name, m))
    return out


def layer_depth(param_name: str, num_layers: int, stable_layer_norm: bool = False) -> int:
    """Depth of an SSL-model parameter: Transformer layer ``i`` (0-based) -> ``i + 1``.

    Everything below the first layer (CNN, feature projection, positional
    convolution, the encoder LayerNorm of post-LN Base models) is depth 0; the
    final encoder LayerNorm of pre-LN ("stable layer norm", Large) models sits
    after the last layer, depth ``num_layers``.

    >>> layer_depth("encoder.layers.3.attention.q_proj.weight", 12)
    4
    >>> layer_depth("feature_projection.projection.weight", 12)
    0
    """
    parts = param_name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == "layers" and i > 0 and parts[i - 1] == "encoder" and parts[i + 1].isdigit():
            return int(parts[i + 1]) + 1
    if stable_layer_norm and param_name.startswith("encoder.layer_norm."):
        return num_layers
    return 0


def param_groups(model: nn.Module, layer_decay: float = 1.0, frontend_lr_ratio: float = 1.0,
                 weight_decay: float | None = None) -> list[dict[str, Any]]:
    """Trainable parameters grouped by lr scale, for layer-wise learning-rate decay.

    Backend and head parameters get ``lr_scale`` 1. A trainable SSL frontend's
    parameter at depth ``d`` (:func:`layer_depth`) of a model with ``L``
    Transformer layers gets ``frontend_lr_ratio * layer_decay ** (L - d)``: the
    top layer ``frontend_lr_ratio``, each layer below ``layer_decay`` times less.
    Frozen parameters (the CNN in phase 2, all of a frozen frontend) are left out.
    Every group has an ``lr_scale`` and a ``name``, and ``weight_decay`` if given
    (else the optimiser's default applies).
    """
    assert 0 < layer_decay <= 1, f"layer_decay must be in (0, 1], got {layer_decay}"
    assert frontend_lr_ratio >= 0, f"frontend_lr_ratio must be >= 0, got {frontend_lr_ratio}"
    scales: dict[int, float] = {}
    for _, fe in _ssl_frontends(model):
        cfg = fe.model.config
        n_layers = int(cfg.num_hidden_layers)
        stable = bool(getattr(cfg, "do_stable_layer_norm", False))
        for name, p in fe.model.named_parameters():
            if p.requires_grad:
                d = layer_depth(name, n_layers, stable)
                scales[id(p)] = frontend_lr_ratio * layer_decay ** (n_layers - d)
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        ssl = id(p) in scales
        s = scales.get(id(p), 1.0)
        g = groups.setdefault((ssl, s), {
            "params": [], "lr_scale": s, "name": f"ssl_x{s:.4g}" if ssl else "backend",
        })
        if weight_decay is not None:
            g["weight_decay"] = weight_decay
        g["params"].append(p)
    # backend first, then SSL groups from the top layer down
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], -k[1]))]


# --------------------------------------------------------------------------- L2-SP
class L2SP:
    """L2-SP regulariser: ``alpha / 2 * sum ||w - w0||^2`` over a module's trainable weights.

    ``w0`` is a copy of the weights (on their device) when the regulariser is
    built: build it after the pre-trained SSL model is loaded and moved to its
    device, and before any ``model_init``, so phase 3 still pulls toward the
    pre-trained (not the phase-2) weights. The reference is in no state dict;
    on resume it is rebuilt from ``frontend_args`` the same way.

    >>> lin = nn.Linear(2, 2); reg = L2SP(lin, alpha=1.0)
    >>> float(reg().detach())
    0.0
    """

    def __init__(self, module: nn.Module, alpha: float):
        assert alpha >= 0, f"l2sp_alpha must be >= 0, got {alpha}"
        self.alpha = float(alpha)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.ref = [p.detach().clone() for p in self.params]

    def __call__(self) -> torch.Tensor:
        if not self.params or self.alpha == 0:
            return torch.zeros(())
        total = sum(((p - r) ** 2).sum() for p, r in zip(self.params, self.ref, strict=True))
        return 0.5 * self.alpha * total


# ------------------------------------------------------------------ margin schedule
# Margin scheduler for AAM heads, with WeSpeaker's semantics.
#
# The margin stays at ``initial_margin`` until ``increase_start_epoch``, rises to
# ``final_margin`` along a curve until ``fix_start_epoch``, and stays there after.
# It is updated every iteration (``epoch_iter`` iterations per epoch). Curves, for
# ``r`` in [0, 1] the fraction of the rising phase done:
#
# * ``exp`` (WeSpeaker's default): ``1 - 1e-3 ** r`` (fast at first);
# * ``linear``: ``r``;
# * ``log`` (the LAP recipe's): ``1 + log(a + (1 - a) r) / -log(a)``, ``a = 5e-3``.

INCREASE_TYPES = ("exp", "linear", "log")
_EXP_FLOOR = 1e-3  # WeSpeaker's exp curve: ratio = 1 - floor ** r
_LOG_START = 5e-3  # LAP's log curve: log(linspace(5e-3, 1)) rescaled to [0, 1]


def margin_ratio(r: float, increase_type: str) -> float:
    """Fraction of the margin increase reached after a fraction ``r`` of the rising phase."""
    if increase_type not in INCREASE_TYPES:
        raise ValueError(f"unknown increase_type {increase_type!r}; valid: {list(INCREASE_TYPES)}")
    r = min(max(r, 0.0), 1.0)
    if increase_type == "exp":
        return 1.0 - _EXP_FLOOR**r
    if increase_type == "linear":
        return r
    return 1.0 + math.log(_LOG_START + (1.0 - _LOG_START) * r) / -math.log(_LOG_START)


class MarginScheduler:
    """Drive ``projection.update(margin)`` every iteration.

    Args mirror WeSpeaker's ``margin_update`` block: ``initial_margin``,
    ``final_margin``, ``increase_start_epoch``, ``fix_start_epoch``,
    ``update_margin`` (False: keep the head's margin untouched),
    ``increase_type``. ``projection`` is any head with ``update(margin)``;
    heads without one (softmax) are left alone.

    >>> class Head:
    ...     def update(self, margin): self.margin = margin
    >>> s = MarginScheduler(Head(), epoch_iter=10, initial_margin=0.0, final_margin=0.2,
    ...                     increase_start_epoch=1, fix_start_epoch=3, increase_type="linear")
    >>> [round(s.margin_at(e * 10), 3) for e in (0, 1, 2, 3, 4)]
    [0.0, 0.0, 0.1, 0.2, 0.2]
    """

    def __init__(
        self,
        projection,
        epoch_iter: int,
        initial_margin: float,
        final_margin: float,
        increase_start_epoch: int,
        fix_start_epoch: int,
        update_margin: bool = True,
        increase_type: str = "exp",
    ):
        assert epoch_iter > 0, f"epoch_iter must be positive, got {epoch_iter}"
        assert 0 <= increase_start_epoch <= fix_start_epoch, (
            f"need 0 <= increase_start_epoch ({increase_start_epoch}) <= "
            f"fix_start_epoch ({fix_start_epoch})"
        )
        if increase_type not in INCREASE_TYPES:
            raise ValueError(
                f"unknown increase_type {increase_type!r}; valid: {list(INCREASE_TYPES)}"
            )
        self.projection = projection
        self.epoch_iter = int(epoch_iter)
        self.initial_margin = float(initial_margin)
        self.final_margin = float(final_margin)
        self.increase_start_iter = int(increase_start_epoch * epoch_iter)
        self.fix_start_iter = int(fix_start_epoch * epoch_iter)
        self.increase_type = increase_type
        self.update_margin = bool(update_margin) and hasattr(projection, "update")
        self.current_iter = 0
        if self.update_margin:
            projection.update(self.initial_margin)

    def margin_at(self, iteration: int) -> float:
        """The scheduled margin at a global iteration (a pure function of it)."""
        if iteration >= self.fix_start_iter:
            return self.final_margin
        if iteration < self.increase_start_iter:
            return self.initial_margin
        span = self.fix_start_iter - self.increase_start_iter
        ratio = margin_ratio((iteration - self.increase_start_iter) / span, self.increase_type)
        return self.initial_margin + (self.final_margin - self.initial_margin) * ratio

    def step(self, current_iter: int | None = None) -> None:
        """Set the margin for ``current_iter`` (default: the next iteration) and advance."""
        if current_iter is not None:
            self.current_iter = int(current_iter)
        if self.update_margin:
            self.projection.update(self.margin_at(self.current_iter))
        self.current_iter += 1

    def get_margin(self) -> float:
        """The head's current margin (0.0 for heads without one)."""
        return float(getattr(self.projection, "margin", 0.0))

    def state_dict(self) -> dict:
        return {"current_iter": self.current_iter}

    def load_state_dict(self, state: dict) -> None:
        self.current_iter = int(state["current_iter"])
        if self.update_margin:
            self.projection.update(self.margin_at(max(self.current_iter - 1, 0)))


#: Margin schedulers by the config's ``margin_scheduler`` name (WeSpeaker's one).
MARGIN_SCHEDULERS: Registry[type[MarginScheduler]] = Registry(
    "margin scheduler", {"MarginScheduler": MarginScheduler})


def build_margin_scheduler(name: str, projection: Any, **kwargs: Any) -> MarginScheduler:
    """``MARGIN_SCHEDULERS[name](projection, **kwargs)``; unknown names list the valid ones."""
    return MARGIN_SCHEDULERS.build(name, projection, **kwargs)
