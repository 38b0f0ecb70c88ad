"""The complete embedding extractor: frontend + speaker model, built from a config.

Extraction, export and the CLI share :class:`SpeakerEmbeddingExtractor`. Its state
dict holds only what is trained: when every frontend parameter is frozen, the SSL
model (referenced by ``frontend_args.model_name_or_path`` in the config) is left
out of the saved state, and a state dict without frontend entries loads into an
extractor whose frontend was built from that config. With LoRA (``lora_args``,
:mod:`wespeaker_lap.frontend.lora`) the saved frontend entries are the LoRA
matrices and the frozen model's fingerprint only.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from wespeaker_lap.frontend import get_frontend
from wespeaker_lap.frontend.lora import (
    apply_lora,
    check_lora_checkpoint,
    fill_frozen_entries,
    lora_state,
    lora_state_dict_hook,
    merge_lora,
    parse_lora_args,
)
from wespeaker_lap.frontend.precision import DTYPE_CHOICES
from wespeaker_lap.io.checkpoints import CheckpointError, load_weights
from wespeaker_lap.models.common import count_parameters
from wespeaker_lap.models.interfaces import FramePoolingBackend, SpeakerBackend
from wespeaker_lap.models.projections import PROJECTIONS, get_projection
from wespeaker_lap.models.zoo import build_speaker_model

logger = logging.getLogger(__name__)

FRONTEND_PREFIX = "frontend."
#: Inference runs audio longer than this (seconds) through the SSL model in windows
#: of this length, overlapping by LONG_AUDIO_OVERLAP (see SpeakerEmbeddingExtractor.embed).
LONG_AUDIO_WINDOW = 20.0
LONG_AUDIO_OVERLAP = 4.0


class SpeakerEmbeddingExtractor(nn.Module):
    """Frontend + speaker model.

    forward(wavs (B, N) float, lengths (B,) valid samples or None) -> (B, embed_dim);
    with ``return_layer_scores`` also the model's layer scores (B, heads, T, L).

    ``frontend`` must return ``(hidden (B, L, T, D), frame_lengths (B,))`` (see
    :class:`wespeaker_lap.frontend.SSLFrontend`); ``backend`` a
    :class:`~wespeaker_lap.models.interfaces.SpeakerBackend` (any registry model).
    """

    def __init__(self, frontend: nn.Module, backend: nn.Module):
        if not isinstance(backend, SpeakerBackend):
            raise TypeError(f"{type(backend).__name__} is not a SpeakerBackend: a speaker model "
                            "reports embed_dim and has forward(x, lengths, return_layer_scores)")
        super().__init__()
        self.frontend = frontend
        self.backend = backend
        self._register_state_dict_hook(_drop_frozen_frontend)
        self._register_load_state_dict_pre_hook(_fill_missing_frontend, with_module=True)

    @property
    def embed_dim(self) -> int:
        return int(self.backend.embed_dim)

    @property
    def frontend_frozen(self) -> bool:
        """True when no frontend parameter is trainable (its weights are then not saved)."""
        return not any(p.requires_grad for p in self.frontend.parameters())

    def load_trained_weights(self, state: Mapping[str, torch.Tensor],
                             where: str | os.PathLike | None = None) -> bool:
        """Load a training checkpoint's weights for inference; True if it held SSL weights.

        ``state``: a ``model_*.pt`` / ``avg_model.pt`` state dict. The training head
        (``projection.*``) is dropped; every backend key must fit. Entries under
        ``frontend.`` exist only when the SSL model was trained (phase 2/3): they
        are loaded into the frontend even though it is frozen now, every key
        required. Without them the frontend keeps the weights it was built with.

        A LoRA extractor (``lora_args``) takes a LoRA checkpoint (its fingerprint
        must match the SSL model built, every LoRA matrix required) and merges the
        LoRA matrices into the SSL weights; it then runs like a plain extractor.
        ``where``: the file ``state`` came from, named when it does not fit.
        """
        if lora_state(self.frontend) is not None:
            check_lora_checkpoint(self, state)
            sd = {k: v for k, v in state.items() if not k.startswith("projection.")}
            load_weights(self, sd, strict=True, where=where)
            merge_lora(self)
            return True
        sd = {k: v for k, v in state.items() if not k.startswith("projection.")}
        tuned = {k[len(FRONTEND_PREFIX):]: v for k, v in sd.items()
                 if k.startswith(FRONTEND_PREFIX)}
        if tuned:
            try:
                self.frontend.load_state_dict(tuned, strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"{where or 'state dict'}: its SSL weights do not fit "
                                      f"this model's SSL frontend: {str(e)[:400]}") from None
            sd = {k: v for k, v in sd.items() if not k.startswith(FRONTEND_PREFIX)}
        load_weights(self, sd, strict=True, where=where)
        return bool(tuned)

    @torch.no_grad()
    def embed(
        self,
        wavs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        return_layer_scores: bool = False,
        window: float = LONG_AUDIO_WINDOW,
        overlap: float = LONG_AUDIO_OVERLAP,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Inference on audio of any length, in memory that grows linearly with it.

        Audio no longer than ``window`` seconds goes through :meth:`forward`
        unchanged. Longer audio runs through the SSL model in overlapping windows
        (:meth:`SSLFrontend.forward_windows`, which documents how its hidden states
        relate to a whole-utterance pass); the backend's per-frame part
        (``frame_features``) runs on each window and only its output is kept, and
        the utterance-level part (``pool_frames``: attention over time, pooling)
        runs once over all of an utterance's frames. So the embedding pools over
        the whole utterance, and memory holds the backend's frame features
        (512 floats a frame for LAP_ASTP, 40 MB a minute), not the SSL hidden
        states of every layer. A backend without that split (UniPool, whose
        layer/frame network convolves over time) gets the windows' hidden states
        concatenated: exact in the same sense, but memory grows with all layers.

        wavs: (B, N), lengths: (B,) -> (B, embed_dim) [, layer scores (B, H, T, L)]
        """
        if lengths is None:
            lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
        if int(lengths.max()) <= round(window * self.frontend.sample_rate):
            return self(wavs, lengths, return_layer_scores=return_layer_scores)
        chunks = self.frontend.forward_windows(wavs, lengths, window, overlap)
        if not isinstance(self.backend, FramePoolingBackend):
            hidden, frames = _concat_chunks([(h, n) for h, n in chunks], time_dim=2)
            return self.backend(hidden, frames, return_layer_scores=return_layer_scores)
        feats, scores = [], []
        for hidden, n in chunks:
            f, s = self.backend.frame_features(hidden, n.clamp(min=1))
            feats.append((f, n))
            if return_layer_scores and s is not None:
                scores.append((s, n))
        frames, total = _concat_chunks(feats, time_dim=1)
        del feats  # the joined copy is all the pooling needs
        emb = self.backend.pool_frames(frames, total)
        if not return_layer_scores:
            return emb
        return emb, (_concat_chunks(scores, time_dim=2)[0] if scores else None)

    def forward(
        self,
        wavs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        return_layer_scores: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        hidden, frame_lengths = self.frontend(wavs, lengths)
        return self.backend(hidden, frame_lengths, return_layer_scores=return_layer_scores)


def _concat_chunks(chunks: list[tuple[torch.Tensor, torch.Tensor]], time_dim: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Join per-window tensors along time, each utterance's valid frames in order.

    chunks: ``(x, n)`` with ``x`` (B, ..., t, ...) (time at ``time_dim``) and ``n``
    (B,) the valid frames of each utterance in that chunk -> (B, ..., T, ...), (B,)
    with T the longest total; padding is zero.
    """
    total = torch.stack([n for _, n in chunks]).sum(0)
    x0 = chunks[0][0]
    shape = list(x0.shape)
    shape[time_dim] = int(total.max())
    out = x0.new_zeros(shape)
    pos = torch.zeros_like(total)
    for x, n in chunks:
        for i, k in enumerate(n.tolist()):
            if k:
                start = int(pos[i])
                out[i].narrow(time_dim - 1, start, k).copy_(x[i].narrow(time_dim - 1, 0, k))
        pos += n
    return out, total


def _drop_frozen_frontend(module, state_dict, prefix, local_metadata):
    """State-dict hook: leave a frozen frontend's tensors out of the saved state.

    With LoRA: keep only its LoRA matrices (trained) and the frozen model's fingerprint.
    """
    if lora_state(module.frontend) is not None:
        lora_state_dict_hook(module.frontend, state_dict, prefix + FRONTEND_PREFIX)
    elif module.frontend_frozen:
        for key in [k for k in state_dict if k.startswith(prefix + FRONTEND_PREFIX)]:
            del state_dict[key]
    return state_dict


def _fill_missing_frontend(
    module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
):
    """Load pre-hook: a state without frontend entries keeps the frontend as built.

    With LoRA, the frozen SSL weights (never saved) are always kept as built.
    """
    head = prefix + FRONTEND_PREFIX
    if lora_state(module.frontend) is not None:
        fill_frozen_entries(module.frontend, state_dict, head)
        return
    if not any(k.startswith(head) for k in state_dict):
        for key, value in module.frontend.state_dict().items():
            state_dict[head + key] = value


def build_extractor(config: Mapping[str, Any]) -> SpeakerEmbeddingExtractor:
    """Frontend + speaker model from a config in WeSpeaker grammar.

    Reads ``frontend`` / ``frontend_args`` and ``model`` / ``model_args``; the
    model's ``feat_dim`` / ``num_layers`` come from the frontend (``-1`` or absent).
    A non-empty ``lora_args`` wraps the SSL Transformer with LoRA
    (:func:`wespeaker_lap.frontend.lora.apply_lora`); the frontend is then built in
    float32 and takes ``frontend_args.dtype`` when the LoRA matrices are merged.
    """
    for key in ("frontend", "model"):
        if key not in config:
            raise ValueError(f"config has no {key!r} entry (keys: {sorted(config)})")
    lora = parse_lora_args(config.get("lora_args"))
    frontend_args = dict(config.get("frontend_args") or {})
    merged_dtype = frontend_args.get("dtype", "float32")
    if merged_dtype not in DTYPE_CHOICES:
        raise ValueError(f"frontend_args.dtype must be one of {list(DTYPE_CHOICES)}, "
                         f"got {merged_dtype!r}")
    if lora is not None:
        frontend_args["dtype"] = "float32"  # the fingerprint and merge need float32 weights
    frontend = get_frontend(config["frontend"], **frontend_args)
    backend = build_speaker_model(
        config["model"], config.get("model_args"), frontend.hidden_size, frontend.num_layers
    )
    extractor = SpeakerEmbeddingExtractor(frontend, backend)
    if lora is not None:
        apply_lora(extractor, lora, merged_dtype=merged_dtype)
    logger.info(
        "built %s on %s frontend (%d layers x %d): %.2fM trainable backend parameters",
        config["model"], config["frontend"], frontend.num_layers, frontend.hidden_size,
        count_parameters(backend) / 1e6,
    )
    return extractor


def build_projection(config: Mapping[str, Any], embed_dim: int, num_class: int) -> nn.Module:
    """The training head from ``projection_args`` (``project_type`` + its arguments).

    ``embed_dim`` and ``num_class`` are filled in (as WeSpeaker's trainer does). A
    margin head without an explicit ``margin`` takes ``margin_update.final_margin``:
    its inter-top-k penalty reaches ``mp`` at that margin.
    """
    args = dict(config.get("projection_args") or {})
    if "project_type" not in args:
        raise ValueError("projection_args needs a 'project_type'")
    name = args.pop("project_type")
    for key, value in (("embed_dim", embed_dim), ("num_class", num_class)):
        if args.get(key, value) != value:
            raise ValueError(f"projection_args.{key}={args[key]} disagrees with {value}")
        args[key] = value
    final = (config.get("margin_update") or {}).get("final_margin")
    head = PROJECTIONS.get(name)
    takes_margin = "margin" in inspect.signature(head).parameters
    if takes_margin and "margin" not in args and final is not None:
        args["margin"] = final
    return get_projection(name, **args)
