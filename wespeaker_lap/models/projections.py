"""Classification heads used for training only (WeSpeaker's "projections").

Each head maps embeddings ``(B, E)`` and labels ``(B,)`` to logits ``(B, num_class)``;
the loss (``CrossEntropyLoss``) is applied by the trainer. Heads with a margin
expose ``margin`` and ``update(margin)`` for :class:`~wespeaker_lap.models.MarginScheduler`.

Registry names follow WeSpeaker's ``projection_args.project_type``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wespeaker_lap.registry import Registry


class ArcMarginProduct(nn.Module):
    """Additive angular margin (AAM, ArcFace) softmax with optional sub-centers and inter-top-k.

    * ``K`` sub-centers per class; a class's cosine is the max over its sub-centers
      (weight rows ``c*K .. c*K+K-1`` belong to class ``c``).
    * target logit ``cos(theta + m)``; beyond ``theta > pi - m`` it continues as
      ``cos(theta) - (1 + cos(pi - m))`` so it keeps decreasing (WeSpeaker);
      ``easy_margin`` applies the margin only where ``cos(theta) > 0``.
    * inter-top-k: the ``k_top`` closest wrong classes get ``cos(theta - mp')``. The
      penalty grows with the margin: ``mp' = mp * m / margin`` where ``margin`` is
      the constructor's (final) margin, so ``mp`` is reached with the full margin
      (the LAP authors' rule) and no penalty applies while ``m <= 0.001``.
    * ``do_lm`` (large-margin fine-tuning) switches inter-top-k off.

    x: (B, E), label: (B,) long -> logits (B, num_class), multiplied by ``scale``.

    >>> head = ArcMarginProduct(4, 3, margin=0.2)
    >>> tuple(head(torch.randn(2, 4), torch.tensor([0, 2])).shape)
    (2, 3)
    """

    def __init__(
        self,
        embed_dim: int,
        num_class: int,
        scale: float = 32.0,
        margin: float = 0.2,
        easy_margin: bool = False,
        K: int = 1,
        mp: float = 0.0,
        k_top: int = 0,
        do_lm: bool = False,
    ):
        super().__init__()
        assert embed_dim > 0 and num_class > 1, (
            f"need embed_dim > 0 and num_class > 1, got {embed_dim}, {num_class}"
        )
        assert K >= 1, f"K (sub-centers) must be >= 1, got {K}"
        assert 0 <= k_top < num_class, f"k_top={k_top} must be in [0, num_class={num_class})"
        assert scale > 0, f"scale must be positive, got {scale}"
        assert 0.0 <= margin < math.pi / 2, f"margin must be in [0, pi/2), got {margin}"
        self.embed_dim = embed_dim
        self.num_class = num_class
        self.scale = float(scale)
        self.easy_margin = easy_margin
        self.K = K
        self.do_lm = do_lm
        self.mp = 0.0 if do_lm else float(mp)
        self.k_top = 0 if do_lm else int(k_top)
        self.final_margin = float(margin)
        self.weight = nn.Parameter(torch.empty(K * num_class, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.update(margin)

    def update(self, margin: float) -> None:
        """Set the current margin (and the inter-top-k penalty that goes with it)."""
        self.margin = float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mmm = 1.0 + math.cos(math.pi - margin)
        if margin > 0.001 and self.final_margin > 0:
            self.current_mp = self.mp * margin / self.final_margin
        else:
            self.current_mp = 0.0
        self.cos_mp, self.sin_mp = math.cos(self.current_mp), math.sin(self.current_mp)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(x), F.normalize(self.weight))  # (B, K * N)
        if self.K > 1:
            cosine = cosine.view(-1, self.num_class, self.K).amax(dim=2)
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(1e-12, 1.0))
        phi = cosine * self.cos_m - sine * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mmm)
        target = F.one_hot(label.view(-1).long(), self.num_class).bool()
        out = torch.where(target, phi, cosine)
        if self.k_top > 0:
            hard = (cosine - 2.0 * target.to(cosine.dtype)).topk(self.k_top, dim=1).indices
            hard_mask = torch.zeros_like(target).scatter_(1, hard, True)
            phi_mp = cosine * self.cos_mp + sine * self.sin_mp  # cos(theta - mp')
            out = torch.where(hard_mask, phi_mp, out)
        return out * self.scale

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_class={self.num_class}, scale={self.scale}, "
            f"margin={self.margin}, K={self.K}, k_top={self.k_top}, mp={self.mp}"
        )


class ArcMarginProduct_intertopk_subcenter(ArcMarginProduct):
    """AAM with 3 sub-centers and inter-top-k (k = 5, penalty 0.06): the LAP recipe's head."""

    def __init__(
        self,
        embed_dim: int,
        num_class: int,
        scale: float = 32.0,
        margin: float = 0.2,
        easy_margin: bool = False,
        K: int = 3,
        mp: float = 0.06,
        k_top: int = 5,
        do_lm: bool = False,
    ):
        super().__init__(embed_dim, num_class, scale, margin, easy_margin, K, mp, k_top, do_lm)


class SoftmaxProjection(nn.Linear):
    """Plain softmax head: a Linear layer. x: (B, E) -> logits (B, num_class)."""

    def __init__(self, embed_dim: int, num_class: int):
        assert embed_dim > 0 and num_class > 1, (
            f"need embed_dim > 0 and num_class > 1, got {embed_dim}, {num_class}"
        )
        super().__init__(embed_dim, num_class)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


PROJECTIONS: Registry[type[nn.Module]] = Registry("projection", {
    "arc_margin": ArcMarginProduct,
    "arc_margin_intertopk_subcenter": ArcMarginProduct_intertopk_subcenter,
    "softmax": SoftmaxProjection,
})


def get_projection(name: str, **kwargs: Any) -> nn.Module:
    """Build a classification head by WeSpeaker ``project_type``; unknown names list the valid ones.

    >>> get_projection("softmax", embed_dim=4, num_class=3)
    SoftmaxProjection(in_features=4, out_features=3, bias=True)
    """
    return PROJECTIONS.build(name, **kwargs)
