"""The pre-training curve: loss and masked-unit accuracy per step against chance.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend
switch) and writes the PNG atomically.
"""

from __future__ import annotations

import os

import numpy as np

from wespeaker_lap.io.files import atomic_path
from wespeaker_lap.pretrain.hubert import History


def _smooth(v: list[float], n: int) -> np.ndarray:
    x = np.asarray(v, dtype=np.float64)
    if x.size < 2 or n <= 1:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    k = np.minimum(np.arange(1, x.size + 1), n)
    return (c[1:] - c[np.arange(1, x.size + 1) - k]) / k


def plot_history(hist: History, out_png: str | os.PathLike, title: str = "") -> None:
    """Two panels: cross-entropy (with ln K and the unigram entropy) and masked-unit
    accuracy (with 1/K and the majority-unit accuracy), each a running mean over 20 steps;
    with the utterance contrast on, its loss and partner accuracy against their chance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    steps = np.asarray(hist.step)
    ax1.plot(steps, _smooth(hist.loss, 20), label="masked loss")
    ax1.axhline(hist.chance_loss, color="k", ls="--", lw=1, label=f"ln K = {hist.chance_loss:.2f}")
    ax1.axhline(hist.unigram_entropy, color="grey", ls=":", lw=1,
                label=f"unigram entropy {hist.unigram_entropy:.2f}")
    if hist.contrast_loss:
        loss0, acc0 = hist.contrast_chance
        ax1.plot(steps, _smooth(hist.contrast_loss, 20), label="utterance contrast loss")
        ax1.axhline(loss0, color="C1", ls="--", lw=1, label=f"ln(B-1) = {loss0:.2f}")
        ax2.plot(steps, 100 * _smooth(hist.contrast_acc, 20), label="partner-crop accuracy")
        ax2.axhline(100 * acc0, color="C1", ls="--", lw=1,
                    label=f"1/(B-1) = {100 * acc0:.1f} %")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy (nats)")
    ax1.legend(fontsize=8)
    ax2.plot(steps, 100 * _smooth(hist.acc, 20), label="masked-unit accuracy")
    ax2.axhline(100 * hist.chance_acc, color="k", ls="--", lw=1,
                label=f"1/K = {100 * hist.chance_acc:.1f} %")
    ax2.axhline(100 * hist.majority_acc, color="grey", ls=":", lw=1,
                label=f"majority unit {100 * hist.majority_acc:.1f} %")
    ax2.set_xlabel("step")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
