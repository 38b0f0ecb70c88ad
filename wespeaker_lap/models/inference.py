"""A trained extractor for inference: find it, load it, embed batches.

Shared by extraction (:mod:`wespeaker_lap.utils.extraction`), the
``wespeaker-lap`` command and export. An experiment directory (``exp_dir``)
holds ``config.yaml`` and weights (:data:`MODEL_CANDIDATES`, else the newest
``models/model_{epoch}.pt``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wespeaker_lap.frontend.fingerprint import check_frontend_identity, resolve_frontend_args
from wespeaker_lap.frontend.lora import holds_ssl_weights
from wespeaker_lap.io.checkpoints import list_checkpoints, read_weights
from wespeaker_lap.io.files import read_yaml
from wespeaker_lap.models.extractor import SpeakerEmbeddingExtractor, build_extractor

logger = logging.getLogger(__name__)

#: What a trained model directory (an exp_dir) may hold, in order of preference.
MODEL_CANDIDATES = ("models/avg_model.pt", "avg_model.pt", "models/final_model.pt",
                    "final_model.pt")


def resolve_model_dir(model_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(config.yaml, weights)`` of a trained model directory (an ``exp_dir``).

    Weights: ``avg_model.pt``, else ``final_model.pt``, else the newest
    ``models/model_{epoch}.pt``.
    """
    d = Path(model_dir)
    config = d / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{d} is not a trained model directory: no config.yaml in it")
    for name in MODEL_CANDIDATES:
        if (d / name).is_file():
            return config, d / name
    ckpts = list_checkpoints(d / "models")
    if ckpts:
        return config, ckpts[-1][1]
    raise FileNotFoundError(
        f"{d} has no weights: looked for {list(MODEL_CANDIDATES)} and models/model_*.pt"
    )


def inference_config(cfg: Mapping[str, Any], dtype: str = "float32") -> dict[str, Any]:
    """The training config with the frontend set up for inference (frozen, given dtype)."""
    cfg = dict(cfg)
    fa = dict(cfg.get("frontend_args") or {})
    fa["frozen"] = True
    fa["dtype"] = dtype
    for key in ("layerdrop", "freeze_feature_encoder"):
        fa.pop(key, None)
    cfg["frontend_args"] = fa
    return cfg


def load_trained_extractor(
    config: str | os.PathLike | Mapping[str, Any],
    weights: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    ignore_frontend_mismatch: bool = False,
) -> SpeakerEmbeddingExtractor:
    """Build the extractor of a training config and load trained weights into it.

    See :meth:`SpeakerEmbeddingExtractor.load_trained_weights` for what the
    checkpoint may hold. With ``weights=None`` the backend keeps its initial
    weights (for tests). Returns the extractor in eval mode on ``device``.

    When ``config`` is an experiment's ``config.yaml`` file, a relative
    ``frontend_args.model_name_or_path`` is resolved against its directory and
    the SSL model is checked against the experiment's ``frontend.json``
    (:mod:`wespeaker_lap.frontend.fingerprint`): a different model is a
    ``FrontendMismatchError`` unless ``ignore_frontend_mismatch``.
    """
    if isinstance(config, Mapping):
        cfg, exp_dir = dict(config), None
    else:
        cfg, exp_dir = read_yaml(config), Path(config).parent
        cfg["frontend_args"] = resolve_frontend_args(cfg.get("frontend_args") or {}, exp_dir,
                                                     where=os.fspath(config))
    sd = read_weights(weights) if weights is not None else None
    if exp_dir is not None:
        tuned_in_file = sd is not None and holds_ssl_weights(sd)  # LoRA alone: base matters
        check_frontend_identity(exp_dir, cfg["frontend_args"], ignore=ignore_frontend_mismatch,
                                weights=not tuned_in_file)
    extractor = build_extractor(inference_config(cfg, dtype))
    if sd is not None:
        tuned = extractor.load_trained_weights(sd, where=weights)
        logger.info("loaded %s%s", weights, " (with fine-tuned SSL weights)" if tuned else "")
    return extractor.to(device).eval()


@dataclass
class LayerScoreSum:
    """Running sum of per-utterance layer scores: (heads, L) means over valid frames."""

    total: np.ndarray | None = None
    count: int = 0

    def add(self, scores: torch.Tensor, frame_lengths: torch.Tensor) -> None:
        """scores: (B, heads, T, L) per-frame scores, or (L,) / (B, L) static weights."""
        s = scores.detach().float().cpu()
        if s.dim() == 4:
            t = s.shape[2]
            mask = (torch.arange(t)[None, :] < frame_lengths.cpu()[:, None]).float()
            per_utt = (s * mask[:, None, :, None]).sum(2) / mask.sum(1)[:, None, None]
            batch_sum, n = per_utt.sum(0).numpy(), s.shape[0]
        elif s.dim() == 1:  # one static weight vector for the whole batch
            batch_sum, n = s.numpy()[None, :] * len(frame_lengths), len(frame_lengths)
        else:
            batch_sum, n = s.reshape(s.shape[0], -1, s.shape[-1]).sum(0).numpy(), s.shape[0]
        self.total = batch_sum if self.total is None else self.total + batch_sum
        self.count += n

    def merge(self, other: LayerScoreSum) -> None:
        """Add another sum (another rank's) into this one."""
        if other.total is not None:
            self.total = other.total if self.total is None else self.total + other.total
            self.count += other.count

    def mean(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("no layer scores were collected")
        return self.total / self.count


@torch.no_grad()
def embed_batches(
    extractor: SpeakerEmbeddingExtractor,
    batches: Iterable[Mapping[str, Any]],
    device: str | torch.device = "cpu",
    layer_scores: LayerScoreSum | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield ``(keys, embeddings (B, E) float32)`` for batches of the eval loader.

    Each batch is a dict with ``wavs`` (B, N), ``lengths`` (B,), ``keys``.
    Embeddings that are not finite are an error naming the utterances.
    """
    for batch in batches:
        wavs = batch["wavs"].to(device)
        lengths = batch["lengths"].to(device)
        if layer_scores is not None:
            emb, scores = extractor.embed(wavs, lengths, return_layer_scores=True)
            frames = extractor.frontend.frame_lengths(lengths)
            if scores is not None:
                layer_scores.add(scores, frames)
        else:
            emb = extractor.embed(wavs, lengths)
        emb = emb.float().cpu().numpy()
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            names = [k for k, b in zip(batch["keys"], bad, strict=True) if b]
            raise FloatingPointError(f"non-finite embeddings for {len(names)} utterances: "
                                     f"{names[:5]}")
        yield list(batch["keys"]), emb
