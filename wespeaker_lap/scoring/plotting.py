"""Figures: DET curves on probit axes and the LAP layer-attention heatmap.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no
global backend switch), and writes PNGs atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import norm

from wespeaker_lap.io.files import atomic_path

_DET_TICKS = (1e-4, 2e-4, 5e-4, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_MAX_DET_POINTS = 5000


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")  # no overlapping labels
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: str | os.PathLike, dpi: int = 150) -> None:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def plot_det_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out_png: str | os.PathLike,
    title: str | None = None,
) -> None:
    """DET curves (miss vs false-alarm rate on probit axes), one line per entry.

    ``curves``: name -> ``(p_miss, p_fa)`` arrays as returned by
    :func:`wespeaker_lap.scoring.metrics.det_curve` (first two items).
    """
    if not curves:
        raise ValueError("no DET curves to plot")
    eps = 1e-6
    curves = {
        name: (np.asarray(pm, dtype=np.float64), np.asarray(pf, dtype=np.float64))
        for name, (pm, pf) in curves.items()
    }
    # the lower axis limit follows the smallest non-zero rate (down to 0.01 %)
    smallest = min(
        float(np.min(a[a > 0], initial=1.0)) for pm, pf in curves.values() for a in (pm, pf)
    )
    lo = max([t for t in _DET_TICKS if t <= smallest], default=_DET_TICKS[0])
    lo = min(lo, 0.001)
    hi = _DET_TICKS[-1]
    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, (p_miss, p_fa) in curves.items():
        if p_miss.size > _MAX_DET_POINTS:  # thin very long curves, keep both ends
            keep = np.unique(np.linspace(0, p_miss.size - 1, _MAX_DET_POINTS).astype(np.int64))
            p_miss, p_fa = p_miss[keep], p_fa[keep]
        x = norm.ppf(np.clip(p_fa, eps, 1 - eps))
        y = norm.ppf(np.clip(p_miss, eps, 1 - eps))
        ax.plot(x, y, label=name, linewidth=1.2)
    shown = [t for t in _DET_TICKS if t >= lo]
    ticks = norm.ppf(shown)
    labels = [f"{100 * t:g}" for t in shown]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
    ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
    ax.plot([norm.ppf(lo), norm.ppf(hi)], [norm.ppf(lo), norm.ppf(hi)], "k:", linewidth=0.6)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    _save(fig, out_png)


def plot_layer_attention(
    lap_scores: np.ndarray,
    superb_weights: np.ndarray | None,
    out_png: str | os.PathLike,
    layer_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """LAP layer scores per head and layer as a heatmap, beside SUPERB layer weights.

    ``lap_scores``: (heads, L) LAP sigmoid scores already averaged over frames
    and utterances; ``superb_weights``: (L,) softmax weights of a SUPERB
    weighted-sum model, or ``None`` for the heatmap alone. The right panel also
    draws LAP's head-averaged layer profile rescaled to sum to 1, so both
    models' layer use can be compared on one axis. Layers are numbered 0..L-1
    (0 = CNN encoder output) unless ``layer_labels`` is given.
    """
    lap = np.asarray(lap_scores, dtype=np.float64)
    if lap.ndim != 2:
        raise ValueError(f"lap_scores must be (heads, layers), got shape {lap.shape}")
    if not np.isfinite(lap).all():
        raise ValueError("lap_scores hold NaN or inf")
    n_heads, n_layers = lap.shape
    sup = None
    if superb_weights is not None:
        sup = np.asarray(superb_weights, dtype=np.float64).reshape(-1)
        if sup.shape[0] != n_layers:
            raise ValueError(
                f"superb_weights has {sup.shape[0]} layers but lap_scores has {n_layers}"
            )
        if not np.isfinite(sup).all():
            raise ValueError("superb_weights hold NaN or inf")
    if layer_labels is None:
        layer_labels = [str(i) for i in range(n_layers)]
    elif len(layer_labels) != n_layers:
        raise ValueError(f"{len(layer_labels)} layer labels for {n_layers} layers")

    width = 4.0 + 0.35 * n_layers
    fig = _new_figure((width * (2.0 if sup is not None else 1.0), 1.5 + 0.28 * n_heads))
    ax = fig.add_subplot(1, 2 if sup is not None else 1, 1)
    im = ax.imshow(lap, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(n_layers), layer_labels)
    ax.set_yticks(np.arange(n_heads), [str(h) for h in range(n_heads)])
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_title("LAP layer scores (mean over frames)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if sup is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        pos = np.arange(n_layers)
        ax2.bar(pos, sup, color="tab:orange", label="SUPERB weighted sum")
        profile = lap.mean(axis=0)
        total = profile.sum()
        if total > 0:
            ax2.plot(pos, profile / total, "o-", color="tab:blue", markersize=3,
                     label="LAP, mean over heads (sums to 1)")
        ax2.set_xticks(pos, layer_labels)
        ax2.set_xlabel("layer")
        ax2.set_ylabel("weight")
        ax2.set_title("Layer weights")
        ax2.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


#: The panels of :func:`plot_training_curves`: (record key, title).
TRAINING_PANELS = (("loss", "training loss"), ("acc", "training accuracy (%)"),
                   ("lr", "learning rate"), ("margin", "AAM margin"),
                   ("eer", "validation EER (%)"))


def plot_training_curves(records: Sequence[Mapping], out_png: str | os.PathLike,
                         title: str | None = None) -> None:
    """Loss, accuracy, learning rate, margin and validation EER against the epoch.

    ``records``: the JSON objects of a ``train_log.jsonl``. The step records are a
    thin line at fractional epochs (``global_step / steps per epoch``), the epoch
    records points on it; the EER panel has the validated epochs only (empty,
    with a note, without validation).
    """
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        raise ValueError("no epoch record to plot (has an epoch finished?)")
    steps = [r for r in records if r.get("kind") == "step"]
    per_epoch = max(1, int(epochs[0]["global_step"]) // max(1, int(epochs[0]["epoch"])))
    fig = _new_figure((4.0 * len(TRAINING_PANELS), 3.2))
    for i, (key, name) in enumerate(TRAINING_PANELS):
        ax = fig.add_subplot(1, len(TRAINING_PANELS), i + 1)
        if key == "eer":
            pts = [(r["epoch"], r["valid"]["eer"]) for r in epochs
                   if isinstance(r.get("valid"), Mapping) and r["valid"].get("eer") is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color="tab:red", markersize=4)
                best = min(pts, key=lambda p: p[1])
                ax.annotate(f"best {best[1]:.2f}% (epoch {best[0]})", best,
                            textcoords="offset points", xytext=(0, 8), fontsize="small")
            else:
                ax.text(0.5, 0.5, "no validation", transform=ax.transAxes, ha="center")
        else:
            sx = [r["global_step"] / per_epoch for r in steps if r.get(key) is not None]
            sy = [r[key] for r in steps if r.get(key) is not None]
            if sx:
                ax.plot(sx, sy, "-", color="tab:gray", linewidth=0.7, alpha=0.7)
            ex = [r["epoch"] for r in epochs if r.get(key) is not None]
            ey = [r[key] for r in epochs if r.get(key) is not None]
            ax.plot(ex, ey, "o-", color="tab:blue", markersize=3)
            if key == "lr":
                ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def plot_layer_use(epochs: Sequence[int], scores: Sequence[np.ndarray],
                   out_png: str | os.PathLike, title: str | None = None) -> None:
    """Heatmap of layer use against the epoch: one row per validated epoch.

    ``scores``: per epoch the backend's (heads, L) mean layer scores on the
    validation set (``layer_use.scores`` of ``train_log.jsonl``). Each row is the
    mean over heads rescaled to sum to 1, so rows compare LAP's sigmoid scores,
    SUPERB's softmax weights and MHFA's key and value weights alike: the share
    of the backend's attention each layer gets.
    """
    if len(epochs) != len(scores) or not epochs:
        raise ValueError(f"{len(epochs)} epochs for {len(scores)} score arrays: need one each")
    rows = []
    for e, s in zip(epochs, scores, strict=True):
        s = np.asarray(s, dtype=np.float64)
        if s.ndim != 2 or not np.isfinite(s).all():
            raise ValueError(f"epoch {e}: layer scores must be a finite (heads, L) array, "
                             f"got shape {s.shape}")
        profile = s.mean(axis=0)
        rows.append(profile / profile.sum() if profile.sum() > 0 else profile)
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"layer counts differ between epochs: {sorted({len(r) for r in rows})}")
    mat = np.stack(rows)
    n_ep, n_layers = mat.shape
    fig = _new_figure((3.0 + 0.35 * n_layers, 1.5 + 0.22 * n_ep))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(n_layers), [str(i) for i in range(n_layers)])
    step = max(1, n_ep // 20)
    ax.set_yticks(np.arange(0, n_ep, step), [str(epochs[i]) for i in range(0, n_ep, step)])
    ax.set_xlabel("layer (0 = CNN output)")
    ax.set_ylabel("epoch")
    ax.set_title(title or "layer use on the validation set (share per layer, mean over heads)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    _save(fig, out_png)
