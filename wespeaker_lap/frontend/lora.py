"""LoRA on the SSL Transformer with ``peft``: settings, injection, checkpoints and merging.

Low-rank adaptation (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022) adds to each chosen linear layer ``W`` (d_out x d_in) of the
SSL model's Transformer a trainable update ``(alpha / rank) * B A`` with ``A``
(rank x d_in) random and ``B`` (d_out x rank) zero, so training starts from the
pre-trained model; ``W`` stays frozen. The layers are wrapped by ``peft``
(:func:`peft.inject_adapter_in_model`) and merged back into ``W`` by peft's own
``merge``; nothing here re-implements LoRA.

How it fits the extractor (:mod:`wespeaker_lap.models.extractor`):

* ``lora_args`` in a training config (:func:`parse_lora_args`) makes
  :func:`~wespeaker_lap.models.extractor.build_extractor` call
  :func:`apply_lora`: the whole SSL model is frozen, peft wraps the named
  Transformer layers, and only their ``lora_A`` / ``lora_B`` matrices train
  (with the backend and head). A target name the Transformer lacks is a
  :class:`~wespeaker_lap.checks.ConfigError` listing the names it has.
* The extractor's state dict then holds the LoRA matrices, the backend, the
  head and :data:`FINGERPRINT_KEY`: a SHA-256 of the frozen SSL weights the
  LoRA matrices were trained on. It never holds the SSL weights themselves.
  :func:`check_lora_checkpoint` refuses a checkpoint whose fingerprint differs
  from the SSL model built from the config.
* :func:`merge_lora` folds ``(alpha / rank) B A`` into ``W`` and removes the
  wrappers: the result is a plain extractor whose SSL weights are fine-tuned,
  saved and loaded like a phase-2 full fine-tune (``bin/merge_lora``).

transformers' own (eager) WavLM attention computes
``torch.nn.functional.multi_head_attention_forward`` from ``q_proj.weight``,
``k_proj.weight`` ... directly, which would bypass a wrapped projection
silently. With ``frontend_args.attention: eager``, :func:`apply_lora`
therefore routes the attention of a WavLM layer whose projections are wrapped
through the modules themselves (:func:`_wavlm_attention_via_modules`, the same
computation); the default SDPA attention
(:mod:`wespeaker_lap.frontend.attention`) calls them as modules already. Every
apply ends with a probe forward that fails if any wrapped layer is not reached.
"""

from __future__ import annotations

import hashlib
import logging
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wespeaker_lap.checks import ConfigError, check_int, check_keys, check_number, check_str
from wespeaker_lap.frontend.attention import WavLMSdpaAttention
from wespeaker_lap.frontend.precision import DTYPE_CHOICES, DTYPES

try:  # the `export` extra (pip install -e '.[export]'); only LoRA needs it
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer
except ImportError:  # pragma: no cover - depends on the environment
    LoraConfig = inject_adapter_in_model = None

    class LoraLayer:  # nothing is an instance of it without peft
        pass

logger = logging.getLogger(__name__)

#: Keys of the ``lora_args`` config section.
LORA_ARGS_KEYS = ("rank", "alpha", "dropout", "target_modules")
#: The state-dict entry holding the SHA-256 (32 uint8) of the frozen SSL weights.
FINGERPRINT_KEY = "frontend.ssl_fingerprint"
FRONTEND_PREFIX = "frontend."
_ADAPTER = "default"


@dataclass(frozen=True)
class LoraSettings:
    """Checked ``lora_args``.

    rank: the rank ``r`` of ``B A``; alpha: the update is scaled by ``alpha / rank``;
    dropout: dropout on the LoRA branch's input during training; target_modules:
    names of linear layers of the SSL Transformer (a name matches a module whose
    dotted path ends with it, e.g. ``q_proj`` or ``attention.q_proj``).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")


def parse_lora_args(section: Mapping[str, Any] | None, where: str = "lora_args"
                    ) -> LoraSettings | None:
    """``lora_args`` -> :class:`LoraSettings`; None for an empty or absent section (no LoRA).

    >>> parse_lora_args({"rank": 4, "target_modules": ["q_proj", "v_proj"]}).alpha
    16.0
    >>> parse_lora_args({})
    """
    if not section:
        return None
    check_keys(where, section, LORA_ARGS_KEYS)
    d = LoraSettings()
    rank = check_int(f"{where}.rank", section.get("rank", d.rank), lo=1)
    alpha = check_number(f"{where}.alpha", section.get("alpha", d.alpha), lo=0, lo_open=True)
    dropout = check_number(f"{where}.dropout", section.get("dropout", d.dropout), lo=0, hi=1,
                           hi_open=True)
    targets = section.get("target_modules", list(d.target_modules))
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list | tuple) or not targets:
        raise ConfigError(f"{where}.target_modules: expected a non-empty list of module "
                          f"names, got {targets!r}")
    names = tuple(check_str(f"{where}.target_modules[{i}]", t) for i, t in enumerate(targets))
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.target_modules: repeated names in {list(names)}")
    return LoraSettings(rank, alpha, dropout, names)


def check_lora_config(cfg: Mapping[str, Any]) -> None:
    """A training config with ``lora_args`` must have a trainable frontend (``frozen: false``).

    A frozen frontend runs under ``torch.no_grad``: its LoRA matrices would get no gradient.
    """
    if parse_lora_args(cfg.get("lora_args")) is None:
        return
    fa = cfg.get("frontend_args") or {}
    if fa.get("frozen", True):
        raise ConfigError("lora_args needs frontend_args.frozen: false (a frozen frontend runs "
                          "without gradients; with LoRA only the LoRA matrices of the SSL "
                          "model train, its weights stay frozen)")


# ------------------------------------------------------------------------ state
@dataclass
class LoraState:
    """What :func:`apply_lora` leaves on the frontend (as ``frontend.lora``)."""

    settings: LoraSettings
    fingerprint: str  # hex SHA-256 of the frozen SSL weights
    dtype: str  # the frozen forward's dtype after merging: a DTYPES name or "auto"
    keys: list[str] = field(default_factory=list)  # LoRA entries of frontend.state_dict()


def lora_state(frontend: nn.Module) -> LoraState | None:
    """The frontend's :class:`LoraState`, or None when it has no LoRA layers."""
    return getattr(frontend, "lora", None)


def ssl_fingerprint(model: nn.Module) -> str:
    """Hex SHA-256 over the names, shapes and float32 values of a model's state dict."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu")
        h.update(f"{name}:{tuple(t.shape)}:".encode())
        if t.is_floating_point():
            t = t.to(torch.float32)
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fingerprint_tensor(hexdigest: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(hexdigest)), dtype=torch.uint8)


def transformer_linear_names(frontend: nn.Module) -> list[str]:
    """Dotted paths (below ``model.encoder``) of the SSL Transformer's linear layers."""
    return [n for n, m in frontend.model.encoder.named_modules()
            if isinstance(m, nn.Linear) and n]


def _matches(path: str, target: str) -> bool:
    return path == target or path.endswith("." + target)


def check_targets(frontend: nn.Module, targets: tuple[str, ...]) -> None:
    """Every target name must match a linear layer of the Transformer, else ConfigError."""
    paths = transformer_linear_names(frontend)
    missing = [t for t in targets if not any(_matches(p, t) for p in paths)]
    if missing:
        leaves = sorted({p.split(".")[-1] for p in paths})
        raise ConfigError(
            f"lora_args.target_modules: {missing} name no linear layer of the "
            f"{frontend.model.config.model_type} Transformer; its linear layers are "
            f"{leaves} (e.g. {paths[0]!r})"
        )


# ------------------------------------------------------------------------ apply
def apply_lora(extractor: nn.Module, settings: LoraSettings,
               merged_dtype: str = "float32") -> LoraState:
    """Freeze the extractor's SSL model and wrap its Transformer's target layers with LoRA.

    ``extractor``: a :class:`~wespeaker_lap.models.extractor.SpeakerEmbeddingExtractor`
    whose frontend holds float32 weights; ``merged_dtype``: the dtype the frozen
    forward uses after :func:`merge_lora` (``frontend_args.dtype``, ``auto``
    included). The LoRA matrices train unless the frontend is frozen (inference).
    Raises ConfigError for unknown target names and RuntimeError when a wrapped
    layer is not reached by the forward.
    """
    frontend = extractor.frontend
    if inject_adapter_in_model is None:
        raise ImportError("lora_args needs the peft package: pip install -e '.[export]' "
                          "(or bash tools/install.sh)")
    if lora_state(frontend) is not None:
        raise RuntimeError("the frontend already has LoRA layers")
    if merged_dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {merged_dtype!r}")
    if next(frontend.model.parameters()).dtype != torch.float32:
        raise ValueError("LoRA needs the SSL model in float32 (build the frontend with "
                         "dtype float32; merge_lora applies the wanted dtype)")
    check_targets(frontend, settings.target_modules)
    model = frontend.model
    fingerprint = ssl_fingerprint(model)
    model.requires_grad_(False)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    try:
        inject_adapter_in_model(config, model.encoder, adapter_name=_ADAPTER)
    except ValueError as e:  # peft's NoMatchingPeftModuleError and friends
        leaves = sorted({p.split(".")[-1] for p in transformer_linear_names(frontend)})
        raise ConfigError(f"lora_args: peft could not wrap {list(settings.target_modules)} in "
                          f"the SSL Transformer (linear layers: {leaves}): {e}") from e
    _route_wavlm_attention(model.encoder)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name and not frontend.frozen)
    keys = [k for k in frontend.state_dict() if ".lora_" in k]
    state = LoraState(settings, fingerprint, merged_dtype, keys)
    frontend.lora = state
    _check_reached(frontend)
    n_lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    logger.info("LoRA rank %d alpha %g on %d layers (%s): %.3fM parameters; SSL weights frozen",
                settings.rank, settings.alpha, len(keys) // 2,
                ", ".join(settings.target_modules), n_lora / 1e6)
    return state


def _lora_layers(module: nn.Module) -> list[tuple[str, LoraLayer]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer)]


def _check_reached(frontend: nn.Module) -> None:
    """Probe forward (eval mode): every LoRA layer must be called."""
    layers = _lora_layers(frontend.model)
    reached: set[str] = set()
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: reached.add(n))
               for n, m in layers]
    was_training = frontend.training
    frontend.eval()
    try:
        with torch.no_grad():
            n = 4 * int(frontend.min_samples)
            device = next(frontend.model.parameters()).device
            probe = 0.1 * torch.sin(0.05 * torch.arange(n, device=device, dtype=torch.float32))
            frontend(probe[None, :], None)  # a fixed signal: the global RNG is left alone
    finally:
        for h in handles:
            h.remove()
        frontend.train(was_training)
    missed = [n for n, _ in layers if n not in reached]
    if missed:
        raise RuntimeError(f"LoRA layers {missed[:6]} are not reached by the SSL model's "
                           "forward (it reads their weights directly): LoRA there would have "
                           "no effect; choose other lora_args.target_modules")


def _wavlm_attention_via_modules(self, hidden_states: torch.Tensor,
                                 attention_mask: torch.Tensor | None,
                                 gated_position_bias: torch.Tensor):
    """WavLM's multi-head self-attention with the projections called as modules.

    The computation of ``WavLMAttention.torch_multi_head_self_attention`` in
    transformers (scaled dot product plus the gated relative position bias,
    padded keys masked, attention dropout in training), but through
    ``q_proj(x)`` ... ``out_proj(x)`` so that LoRA-wrapped projections act.
    hidden_states (B, T, D), attention_mask (B, T) 1 = valid,
    gated_position_bias (B * heads, T, T) -> ((B, T, D), weights (B, heads, T, T)).
    """
    b, t, d = hidden_states.shape
    h = self.num_heads
    hd = d // h

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, t, h, hd).transpose(1, 2)  # (B, H, T, hd)

    q = heads(self.q_proj(hidden_states)) * (hd ** -0.5)
    k = heads(self.k_proj(hidden_states))
    v = heads(self.v_proj(hidden_states))
    scores = q @ k.transpose(-1, -2) + gated_position_bias.view(b, h, t, t).to(q.dtype)
    if attention_mask is not None:
        padded = attention_mask.ne(1)[:, None, None, :]
        scores = scores.masked_fill(padded, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    probs = F.dropout(weights, p=float(self.dropout), training=self.training)
    out = (probs @ v).transpose(1, 2).reshape(b, t, d)
    return self.out_proj(out), weights


_ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "out_proj")


def _route_wavlm_attention(encoder: nn.Module) -> None:
    for m in encoder.modules():
        if isinstance(m, WavLMSdpaAttention):
            continue  # this project's SDPA attention calls the projections as modules
        if hasattr(m, "torch_multi_head_self_attention") and \
                any(isinstance(getattr(m, p, None), LoraLayer) for p in _ATTN_PROJ):
            m.torch_multi_head_self_attention = types.MethodType(
                _wavlm_attention_via_modules, m)


def _unroute_wavlm_attention(encoder: nn.Module) -> None:
    for m in encoder.modules():
        if "torch_multi_head_self_attention" in m.__dict__:
            del m.__dict__["torch_multi_head_self_attention"]


# ------------------------------------------------------------------ checkpoints
def lora_state_dict_hook(frontend: nn.Module, state_dict: dict[str, torch.Tensor],
                         prefix: str) -> None:
    """Keep only the LoRA entries of the frontend in ``state_dict``, plus the fingerprint.

    ``prefix``: where the frontend's entries start (``"frontend."`` in an extractor).
    """
    st = lora_state(frontend)
    keep = {prefix + k for k in st.keys}
    for key in [k for k in state_dict if k.startswith(prefix) and k not in keep]:
        del state_dict[key]
    state_dict[prefix + FINGERPRINT_KEY[len(FRONTEND_PREFIX):]] = \
        _fingerprint_tensor(st.fingerprint)


def fill_frozen_entries(frontend: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Load pre-hook half: add the frozen SSL weights a LoRA checkpoint leaves out."""
    state_dict.pop(prefix + FINGERPRINT_KEY[len(FRONTEND_PREFIX):], None)
    for key, value in frontend.state_dict().items():
        state_dict.setdefault(prefix + key, value)


def holds_ssl_weights(state: Mapping[str, torch.Tensor]) -> bool:
    """True when a checkpoint holds SSL model weights (full fine-tune or merged), not
    just LoRA matrices and the fingerprint."""
    return any(k.startswith(FRONTEND_PREFIX) and ".lora_" not in k and k != FINGERPRINT_KEY
               for k in state)


def check_lora_checkpoint(model: nn.Module, state: Mapping[str, torch.Tensor],
                          where: str = "checkpoint") -> None:
    """Refuse a checkpoint that does not fit a LoRA model's frozen SSL weights.

    ``model``: an extractor (or training model) with ``.frontend``; ``state``: the
    checkpoint's flat state dict. Errors: its fingerprint differs from the SSL
    model built from the config; it holds SSL weights (a full fine-tune or a merged
    model: LoRA would train on top of weights the config does not build). A
    checkpoint without frontend entries (phase 1) passes. Without LoRA, nothing is checked.
    """
    st = lora_state(getattr(model, "frontend", model))
    if st is None:
        return
    fp = state.get(FINGERPRINT_KEY)
    if fp is not None:
        got = bytes(fp.to(torch.uint8).tolist()).hex()
        if got != st.fingerprint:
            raise ValueError(
                f"{where}: its LoRA matrices were trained on other SSL weights (fingerprint "
                f"{got[:16]}...) than the SSL model this config builds ({st.fingerprint[:16]}...);"
                " point frontend_args.model_name_or_path at the model it was trained on"
            )
    if holds_ssl_weights(state):
        tuned = [k for k in state if k.startswith(FRONTEND_PREFIX) and ".lora_" not in k
                 and k != FINGERPRINT_KEY]
        raise ValueError(
            f"{where} holds SSL model weights ({len(tuned)} entries, e.g. {tuned[0]!r}): it is "
            "a full fine-tune or a merged LoRA model. LoRA trains on the SSL model of "
            "frontend_args; save that model (SSLFrontend.save_pretrained) and point "
            "frontend_args.model_name_or_path at it, or train without lora_args"
        )


# ---------------------------------------------------------------------- merging
def merge_lora(extractor: nn.Module) -> int:
    """Fold every LoRA update into its frozen weight (peft's ``merge``) and unwrap it.

    Afterwards the frontend is a plain SSL frontend with fine-tuned weights (its
    state-dict keys are those of the unmodified model), in the dtype given to
    :func:`apply_lora` (a frozen frontend's). Returns how many layers were merged; 0
    without LoRA.
    """
    frontend = extractor.frontend
    st = lora_state(frontend)
    if st is None:
        return 0
    model = frontend.model
    layers = _lora_layers(model)
    _unroute_wavlm_attention(model.encoder)
    for name, layer in layers:
        layer.merge(safe_merge=True, adapter_names=[_ADAPTER])
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    model.requires_grad_(False)
    if frontend.frozen and st.dtype == "auto":
        frontend.auto_dtype = True  # resolved on the first forward, as when built so
    elif frontend.frozen:
        frontend.dtype = DTYPES[st.dtype]
        model.to(frontend.dtype)
    del frontend.lora
    logger.info("merged LoRA into %d SSL layers", len(layers))
    return len(layers)
