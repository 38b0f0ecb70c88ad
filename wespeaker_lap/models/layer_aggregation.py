"""Layer aggregation: all hidden states of the SSL model -> one frame sequence.

Every aggregator maps ``x: (B, L, T, D)`` (the frontend's layout) and a frame
mask ``(B, T)`` to ``(B, T, out_dim)`` and can also return how it used the
layers, as per-frame, per-head scores ``(B, heads, T, L)``:

* :class:`LayerAttentivePooling` (LAP; Kim, Park, Shin, Han, "Rethinking Leveraging
  Pre-Trained Multi-Layer Representations for Speaker Verification", Interspeech 2025):
  dynamic, per frame and head;
* :class:`WeightedLayerSum` (SUPERB): one static softmax weight per layer;
* :class:`SingleLayer`: one chosen hidden state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wespeaker_lap.models.common import masked_batch_norm, weighted_layer_sum


class WeightedLayerMax(torch.autograd.Function):
    """``max`` over layers of ``y * w`` with a sparse backward.

    y: (B, L, T, h, k), w: (B, L, T, h, 1) -> (B, T, h, k). Only the winning layer of
    each output gets a gradient, so the backward fills one zero ``dy`` and writes the
    winners into it, and sums ``dw`` over the winners with one ``scatter_add``:
    two passes over y-sized memory instead of autograd's chain of full-size
    products, sums and scatters. Same values and (sub)gradients as
    ``(y * w).max(1).values``.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out, idx = (y * w).max(dim=1)
        ctx.save_for_backward(y, w, idx)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        y, w, idx = ctx.saved_tensors
        b, n_layers, t, h, k = y.shape
        dev = y.device
        idx1 = idx.unsqueeze(1)  # (B, 1, T, h, k)
        g1 = g.unsqueeze(1)
        # flat position of (b, winning layer, t, head, k) in a contiguous (B, L, T, h, k)
        frame = torch.arange(t * h * k, device=dev).view(1, t, h, k)
        batch = torch.arange(b, device=dev).view(b, 1, 1, 1) * (n_layers * t * h * k)
        flat = (batch + frame + idx * (t * h * k)).flatten()
        dy = dw = None
        if ctx.needs_input_grad[0]:
            w_win = w.expand(y.shape).gather(1, idx1)
            dy = y.new_zeros(y.shape)
            dy.view(-1).index_put_((flat,), (g1 * w_win).to(y.dtype).flatten())
        if ctx.needs_input_grad[1]:
            acc = torch.promote_types(w.dtype, torch.float32)  # sum bf16 in fp32
            contrib = (g1.to(acc) * y.gather(1, idx1).to(acc)).flatten()
            dw = torch.zeros(b * n_layers * t * h, dtype=acc, device=dev)
            dw = dw.scatter_add_(0, torch.div(flat, k, rounding_mode="floor"), contrib)
            dw = dw.view(w.shape).to(w.dtype)
        return dy, dw


class LayerAttentivePooling(nn.Module):
    """Layer Attentive Pooling (LAP): score every layer per frame and head, max-pool layers.

    The math of the authors' module, computed without its layout shuffles:

    1. ``BatchNorm(D)`` then a ``D -> D`` projection ``W_in`` of every layer and frame.
       The batch norm's affine part is folded into ``W_in``
       (``W (g * xn + b) + c = (W g) xn + (W b + c)``), so the frozen input needs no
       gradient and the backward pass costs one ``D x D`` matrix product instead of two;
       the projection is a single matmul over the merged ``(B, L, T)`` axis.
    2. Channels split into ``heads``; per frame, head and layer the mean and the max
       over the head's channels. The means come from a small ``h x D`` matmul with
       the head-averaged rows of ``W_in``, not from another pass over the features.
    3. A per-head squeeze-excitation MLP over the layer axis (``L -> L//2 -> L``,
       ReLU), shared by both squeezes, as two einsums over heads.
    4. ``scores = sigmoid(SE(mean) + SE(max))`` in (0, 1); dropout on the scores.
    5. Features times scores, max over layers (:class:`WeightedLayerMax`, sparse
       backward), heads concatenated, then a ``D -> out_dim`` projection and
       ``BatchNorm(out_dim)``.

    Under autocast the normalised input is cast once and the whole per-layer
    path runs in the autocast dtype.

    x: (B, L, T, D), mask (B, T) -> (B, T, out_dim); with ``return_scores`` also
    the pre-dropout scores (B, heads, T, L).

    Parameters: ``in_norm`` BatchNorm(D); ``in_proj`` Linear(D, D); ``se_w1``
    (heads, L, L//2), ``se_b1`` (heads, 1, L//2), ``se_w2`` (heads, L//2, L),
    ``se_b2`` (heads, 1, L); ``out_proj`` Linear(D, out_dim); ``out_norm``
    BatchNorm(out_dim). About 0.99M on 13 x 768 with 16 heads and 512 out.

    >>> lap = LayerAttentivePooling(num_layers=5, in_dim=32, out_dim=16, heads=4).eval()
    >>> y, s = lap(torch.randn(2, 5, 7, 32), return_scores=True)
    >>> tuple(y.shape), tuple(s.shape)
    ((2, 7, 16), (2, 4, 7, 5))
    """

    def __init__(
        self,
        num_layers: int,
        in_dim: int,
        out_dim: int = 512,
        heads: int = 16,
        dropout: float = 0.1,
        bias: bool = True,
    ):
        super().__init__()
        assert num_layers >= 2, f"LAP needs at least 2 layers to score, got num_layers={num_layers}"
        assert heads >= 1 and in_dim % heads == 0, (
            f"in_dim={in_dim} must split evenly into heads={heads}"
        )
        assert 0.0 <= dropout < 1.0, f"score dropout must be in [0, 1), got {dropout}"
        self.num_layers = num_layers
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.heads = heads
        hidden = num_layers // 2

        self.in_norm = nn.BatchNorm1d(in_dim)
        self.in_proj = nn.Linear(in_dim, in_dim, bias=bias)
        self.se_w1 = nn.Parameter(torch.empty(heads, num_layers, hidden))
        self.se_b1 = nn.Parameter(torch.zeros(heads, 1, hidden))
        self.se_w2 = nn.Parameter(torch.empty(heads, hidden, num_layers))
        self.se_b2 = nn.Parameter(torch.zeros(heads, 1, num_layers))
        nn.init.xavier_uniform_(self.se_w1)
        nn.init.xavier_uniform_(self.se_w2)
        self.score_dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(in_dim, out_dim, bias=bias)
        self.out_norm = nn.BatchNorm1d(out_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        return_scores: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        b, n_layers, t, d = x.shape
        assert (n_layers, d) == (self.num_layers, self.in_dim), (
            f"LAP built for {self.num_layers} layers x {self.in_dim} got {n_layers} x {d}"
        )
        h = self.heads
        layer_mask = None if mask is None else mask[:, None, :]  # (B, 1, T)
        xn = masked_batch_norm(x, self.in_norm, layer_mask, affine=False)  # (B, L, T, D)
        if torch.is_autocast_enabled(x.device.type):  # cast once for both GEMMs below
            xn = xn.to(torch.get_autocast_dtype(x.device.type))
        w = self.in_proj.weight * self.in_norm.weight  # (D_out, D_in): columns scaled by gamma
        c = self.in_proj.weight @ self.in_norm.bias
        if self.in_proj.bias is not None:
            c = c + self.in_proj.bias
        y = F.linear(xn, w, c).view(b, n_layers, t, h, d // h)  # one GEMM over B*L*T rows
        # the head means of y straight from xn: a (h x D) GEMM, no pass over y
        mean = F.linear(xn, w.view(h, d // h, d).mean(1), c.view(h, d // h).mean(1))

        # (2, B, L, T, h) squeezes -> (2, B, T, h, L) for the per-head MLP over layers
        z = torch.stack((mean.to(y.dtype), y.max(-1).values)).permute(0, 1, 3, 4, 2)
        z = torch.relu(torch.einsum("nbthl,hlk->nbthk", z, self.se_w1) + self.se_b1[:, 0])
        z = torch.einsum("nbthk,hkl->nbthl", z, self.se_w2) + self.se_b2[:, 0]
        scores = torch.sigmoid(z[0] + z[1])  # (B, T, h, L)
        # (B, L, T, h, 1) in y's dtype: under autocast the big product stays bf16
        weights = self.score_dropout(scores).permute(0, 3, 1, 2).unsqueeze(-1).to(y.dtype)

        out = WeightedLayerMax.apply(y, weights).reshape(b, t, d)  # (B, T, D)
        out = masked_batch_norm(self.out_proj(out), self.out_norm, mask)  # (B, T, out_dim)
        if return_scores:
            return out, scores.permute(0, 2, 1, 3)
        return out


class WeightedLayerSum(nn.Module):
    """SUPERB weighted sum: softmax over one weight per layer (initialised to 1/L).

    x: (B, L, T, D) -> (B, T, D); with ``return_scores`` also the weights broadcast
    to (B, 1, T, L) (one "head", the same for every frame).

    >>> ws = WeightedLayerSum(num_layers=3)
    >>> tuple(ws(torch.randn(2, 3, 5, 8)).shape), [round(w, 6) for w in ws.layer_weights().tolist()]
    ((2, 5, 8), [0.333333, 0.333333, 0.333333])
    """

    def __init__(self, num_layers: int):
        super().__init__()
        assert num_layers >= 1, f"num_layers must be positive, got {num_layers}"
        self.num_layers = num_layers
        self.weights = nn.Parameter(torch.full((num_layers,), 1.0 / num_layers))

    def layer_weights(self) -> torch.Tensor:
        """The softmax layer weights (L,)."""
        return torch.softmax(self.weights, dim=0)

    def forward(self, x, mask=None, return_scores=False):
        b, n_layers, t, _ = x.shape
        assert n_layers == self.num_layers, (
            f"weighted sum built for {self.num_layers} layers got {n_layers}"
        )
        w = self.layer_weights()
        out = weighted_layer_sum(x, w[None])[:, 0]
        if return_scores:
            return out, w.view(1, 1, 1, -1).expand(b, 1, t, n_layers)
        return out


class SingleLayer(nn.Module):
    """One hidden state: the last (``layer=-1``) or a given index.

    x: (B, L, T, D) -> (B, T, D); scores are the one-hot (B, 1, T, L).
    """

    def __init__(self, num_layers: int, layer: int = -1):
        super().__init__()
        assert -num_layers <= layer < num_layers, (
            f"layer={layer} out of range for num_layers={num_layers}"
        )
        self.num_layers = num_layers
        self.layer = layer % num_layers

    def forward(self, x, mask=None, return_scores=False):
        b, n_layers, t, _ = x.shape
        assert n_layers == self.num_layers, (
            f"single layer built for {self.num_layers} layers got {n_layers}"
        )
        out = x[:, self.layer]
        if return_scores:
            onehot = F.one_hot(torch.tensor(self.layer), n_layers).to(x)
            return out, onehot.view(1, 1, 1, -1).expand(b, 1, t, n_layers)
        return out

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, layer={self.layer}"
