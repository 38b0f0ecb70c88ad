"""LAP + ASTP written in the LAP authors' layout: the reference the fast model is checked against.

Kim, Park, Shin, Han, "Rethinking Leveraging Pre-Trained Multi-Layer Representations
for Speaker Verification", Interspeech 2025. This follows the layout of the paper's
public module (BatchNorm2d and a 1x1 Conv2d over ``(B, D, T, L)``, per-head
reshapes, the ASTP on ``(B, 3C, T)`` concatenations), written here from the
paper's description. ``wespeaker_lap.models.LAP_ASTP`` computes the same function
faster; ``tests/test_models_lap.py`` loads the same weights into both and
compares, and ``benchmarks/bench_backends.py`` times both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NaiveLAP(nn.Module):
    """LAP as the authors lay it out. x: (B, D, T, L) -> ((B, out_dim, T), scores (B, h, T, L))."""

    def __init__(self, num_layers, in_dim, out_dim=512, heads=16, dropout=0.1):
        super().__init__()
        self.heads = heads
        hidden = num_layers // 2
        self.in_norm = nn.BatchNorm2d(in_dim)
        self.in_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.se_w1 = nn.Parameter(torch.randn(heads, num_layers, hidden))
        self.se_b1 = nn.Parameter(torch.zeros(heads, 1, hidden))
        self.se_w2 = nn.Parameter(torch.randn(heads, hidden, num_layers))
        self.se_b2 = nn.Parameter(torch.zeros(heads, 1, num_layers))
        self.score_dropout = nn.Dropout(dropout)
        self.out_proj = nn.Conv1d(in_dim, out_dim, kernel_size=1)
        self.out_norm = nn.BatchNorm1d(out_dim)

    def forward(self, x):
        b, d, t, n_layers = x.shape
        h = self.heads
        x = self.in_proj(self.in_norm(x))  # (B, D, T, L)
        x = x.view(b, h, d // h, t, n_layers).permute(0, 3, 1, 2, 4).reshape(b * t, h, d // h,
                                                                              n_layers)
        mu = x.mean(dim=2, keepdim=True)  # (BT, h, 1, L)
        mx = x.max(dim=2, keepdim=True).values

        def se(z):
            return torch.matmul(F.relu(torch.matmul(z, self.se_w1) + self.se_b1),
                                self.se_w2) + self.se_b2

        s = torch.sigmoid(se(mu) + se(mx))  # (BT, h, 1, L)
        x = (x * self.score_dropout(s)).max(dim=-1).values  # (BT, h, d/h)
        x = x.reshape(b, t, d).transpose(1, 2)  # (B, D, T)
        scores = s.reshape(b, t, h, n_layers).permute(0, 2, 1, 3)
        return self.out_norm(self.out_proj(x)), scores


class NaiveASTP(nn.Module):
    """ASTP on (B, C, T) with the [x, mean, std] concatenation. -> (B, 2C)."""

    def __init__(self, in_dim, frame_dropout=0.1, eps=1e-4):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(in_dim * 3, in_dim // 2, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(in_dim // 2),
            nn.Conv1d(in_dim // 2, in_dim, kernel_size=1),
        )
        self.frame_dropout = frame_dropout
        self.eps = eps

    def forward(self, x):
        b, c, t = x.shape
        mu = x.mean(dim=-1, keepdim=True)
        sg = torch.sqrt(x.var(dim=-1, keepdim=True).clamp(min=self.eps))
        scr = self.attention(torch.cat([x, mu.expand(-1, -1, t), sg.expand(-1, -1, t)], dim=1))
        if self.training and self.frame_dropout > 0:
            drop = torch.rand(b, 1, t, device=x.device) < self.frame_dropout
            scr = scr.masked_fill(drop, torch.finfo(scr.dtype).min)
        a = torch.softmax(scr, dim=-1)
        m = (x * a).sum(-1)
        s = torch.sqrt(((x * x) * a).sum(-1).sub(m * m).clamp(min=self.eps))
        return torch.cat([m, s], dim=1)


class NaiveLAP_ASTP(nn.Module):
    """The authors' LAP + ASTP. x: (B, L, T, D) frontend layout -> (B, embed_dim)."""

    def __init__(self, feat_dim, num_layers, embed_dim=192, lap_dim=512, heads=16):
        super().__init__()
        self.lap = NaiveLAP(num_layers, feat_dim, lap_dim, heads)
        self.astp = NaiveASTP(lap_dim)
        self.pre_norm = nn.BatchNorm1d(2 * lap_dim)
        self.linear = nn.Linear(2 * lap_dim, embed_dim)
        self.post_norm = nn.BatchNorm1d(embed_dim)

    def forward(self, x, lengths=None, return_layer_scores=False):
        assert lengths is None or bool((lengths == x.shape[2]).all()), "reference: no padding"
        y, scores = self.lap(x.permute(0, 3, 2, 1))  # the authors' (B, D, T, L) view
        emb = self.post_norm(self.linear(self.pre_norm(self.astp(y))))
        return (emb, scores) if return_layer_scores else emb

    @torch.no_grad()
    def load_from(self, fast: nn.Module) -> NaiveLAP_ASTP:
        """Copy the weights of a ``LAP_ASTP`` (same math, channels-last layout)."""
        agg, pool, emb = fast.aggregation, fast.pooling, fast.embedding
        self.lap.in_norm.load_state_dict(agg.in_norm.state_dict())
        self.lap.in_proj.weight.copy_(agg.in_proj.weight[:, :, None, None])
        self.lap.in_proj.bias.copy_(agg.in_proj.bias)
        for name in ("se_w1", "se_b1", "se_w2", "se_b2"):
            getattr(self.lap, name).copy_(getattr(agg, name))
        self.lap.out_proj.weight.copy_(agg.out_proj.weight[:, :, None])
        self.lap.out_proj.bias.copy_(agg.out_proj.bias)
        self.lap.out_norm.load_state_dict(agg.out_norm.state_dict())
        att = self.astp.attention
        att[0].weight.copy_(pool.attn_in.weight[:, :, None])
        att[0].bias.copy_(pool.attn_in.bias)
        att[2].load_state_dict(pool.attn_norm.state_dict())
        att[3].weight.copy_(pool.attn_out.weight[:, :, None])
        att[3].bias.copy_(pool.attn_out.bias)
        self.pre_norm.load_state_dict(emb.pre_norm.state_dict())
        self.linear.load_state_dict(emb.linear.state_dict())
        self.post_norm.load_state_dict(emb.post_norm.state_dict())
        return self


# ----------------------------------------------------------------- timing
