"""Discrete units for masked prediction: k-means over frame features.

As in HuBERT (Hsu et al., "HuBERT: Self-Supervised Speech Representation
Learning by Masked Prediction of Hidden Units", IEEE/ACM TASLP 2021), the units
are the cluster indices of frames under a k-means model fitted on a random
subset of the corpus' frames; scikit-learn's ``MiniBatchKMeans`` (Sculley,
"Web-scale k-means clustering", WWW 2010) does the clustering.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import MiniBatchKMeans

logger = logging.getLogger(__name__)


class TooFewFrames(ValueError):
    """The corpus has fewer frames than the number of clusters asked for."""


def fit_units(
    feats: list[np.ndarray],
    num_units: int,
    seed: int,
    max_frames: int = 200_000,
    batch_size: int = 10_000,
    min_frames_per_unit: int = 5,
) -> MiniBatchKMeans:
    """Fit ``num_units`` clusters on (at most ``max_frames`` of) the frames of ``feats``.

    feats: per utterance (T_i, D). Raises :class:`TooFewFrames` when the corpus has
    fewer than ``min_frames_per_unit * num_units`` frames (too little data to
    estimate that many units: use fewer units or more audio).
    """
    if num_units < 2:
        raise ValueError(f"num_units must be >= 2, got {num_units}")
    total = sum(f.shape[0] for f in feats)
    need = min_frames_per_unit * num_units
    if total < need:
        raise TooFewFrames(
            f"{total} frames in the pre-training corpus are too few for {num_units} "
            f"clusters (need at least {need}, {min_frames_per_unit} per cluster): use fewer "
            "units or more audio"
        )
    x = np.concatenate(feats, axis=0)
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_frames:
        x = x[np.sort(rng.choice(x.shape[0], size=max_frames, replace=False))]
    km = MiniBatchKMeans(
        n_clusters=num_units, batch_size=min(batch_size, x.shape[0]), n_init=3,
        max_iter=100, random_state=seed, compute_labels=False, max_no_improvement=20,
    )
    km.fit(x.astype(np.float32))
    counts = np.bincount(km.predict(x.astype(np.float32)), minlength=num_units)
    p = counts / counts.sum()
    ppl = float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))))
    logger.info("k-means: %d units from %d of %d frames (%d-d); inertia/frame %.3f; "
                "unit perplexity %.1f of %d", num_units, x.shape[0], total, x.shape[1],
                km.inertia_ / max(1, x.shape[0]), ppl, num_units)
    return km


def assign_units(km: MiniBatchKMeans, feats: list[np.ndarray]) -> list[np.ndarray]:
    """The unit of every frame: per utterance (T_i, D) -> (T_i,) int64."""
    return [km.predict(f.astype(np.float32)).astype(np.int64) for f in feats]


def unit_frequencies(units: list[np.ndarray], num_units: int) -> np.ndarray:
    """Relative frequency of each unit over the corpus: (K,), sums to 1."""
    counts = np.bincount(np.concatenate(units), minlength=num_units).astype(np.float64)
    return counts / counts.sum()
