"""The PyTorch backend of :class:`~wespeaker_lap.api.model.SpeakerModel` (imports torch).

Loaded only when ``runtime="torch"``; the ONNX path never imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wespeaker_lap.frontend.fingerprint import check_frontend_identity
from wespeaker_lap.frontend.lora import holds_ssl_weights
from wespeaker_lap.io.checkpoints import read_weights
from wespeaker_lap.io.files import read_yaml
from wespeaker_lap.models.extractor import SpeakerEmbeddingExtractor
from wespeaker_lap.models.inference import (
    embed_batches,
    load_trained_extractor,
    resolve_model_dir,
)


class TorchBackend:
    """A trained extractor on ``device``: ``embed_waveforms((B, N), (B,)) -> (B, E)``."""

    def __init__(self, extractor: SpeakerEmbeddingExtractor, device: str = "cpu"):
        self.extractor = extractor
        self.device = device
        self.sample_rate = int(extractor.frontend.sample_rate)
        self.min_samples = int(extractor.frontend.min_samples)
        self.embed_dim = int(extractor.embed_dim)

    @classmethod
    def from_exp_dir(cls, exp_dir: str | os.PathLike, device: str = "cpu",
                     dtype: str = "float32", ignore_frontend_mismatch: bool = False
                     ) -> TorchBackend:
        """The weights ``bin/extract`` uses (:func:`resolve_model_dir`), loaded as it does."""
        config, weights = resolve_model_dir(exp_dir)
        ext = load_trained_extractor(config, weights, device, dtype,
                                     ignore_frontend_mismatch=ignore_frontend_mismatch)
        return cls(ext, device)

    @classmethod
    def from_package(cls, root: str | os.PathLike, frontend_args: Mapping[str, Any],
                     device: str = "cpu", dtype: str = "float32",
                     ignore_frontend_mismatch: bool = False) -> TorchBackend:
        """A package's extractor; ``frontend_args`` name the SSL model found for it
        (bundled directory, hub snapshot or random config), checked against the
        package's ``frontend.json``."""
        root = Path(root)
        cfg = read_yaml(root / "config.yaml")
        cfg["frontend_args"] = dict(frontend_args)
        weights = root / "model.safetensors"
        sd = read_weights(weights)
        check_frontend_identity(root, cfg["frontend_args"], ignore=ignore_frontend_mismatch,
                                weights=not holds_ssl_weights(sd))
        ext = load_trained_extractor(cfg, weights, device, dtype)
        return cls(ext, device)

    def embed_waveforms(self, wavs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        batch = {"wavs": torch.from_numpy(np.ascontiguousarray(wavs)),
                 "lengths": torch.from_numpy(np.asarray(lengths, dtype=np.int64)),
                 "keys": [str(i) for i in range(len(lengths))]}
        ((_, emb),) = list(embed_batches(self.extractor, [batch], self.device))
        return emb
