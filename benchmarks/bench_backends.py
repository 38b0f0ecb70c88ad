"""Backend cost: forward + backward of every speaker model on frozen SSL hidden states.

One training step's backend work (train mode, gradients for the backend only,
the hidden states need none since the frontend is frozen) on a batch of
32 x 2 s (99 frames at 20 ms) of Base+-sized (13 x 768) and Large-sized
(25 x 1024) hidden states, on CPU.

    python benchmarks/bench_backends.py                    # full table, 2 threads
    python benchmarks/bench_backends.py --repeats 1 --models LAP_ASTP,LAP_ASTP_naive
    python benchmarks/bench_backends.py --quick            # tiny sizes, smoke test

``LAP_ASTP_naive`` is a reference written in the LAP authors' layout (BatchNorm2d
and a 1x1 Conv2d over ``(B, D, T, L)``, per-head reshapes, the ASTP on
``(B, 3C, T)`` concatenations); it computes the same function as ``LAP_ASTP``
(``tests/test_models_lap.py`` loads the same weights into both and compares).

Columns: params = trainable backend parameters; fwd+bwd = best wall seconds of
one forward + backward; x frontend = that time over the frozen frontend forward
of the same batch (from ``benchmarks/bench_frontend.py``; pass its real-time
factor with ``--frontend-rtf``/``--frontend-rtf-large``).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from wespeaker_lap.models import SPEAKER_MODELS, get_speaker_model
from wespeaker_lap.models.common import count_parameters

# WavLM Base+ frozen forward, batch 32 x 2 s, fp32, 2 threads (ANCHORS.md): 7.93 s / 64 s.
BASE_PLUS_FRONTEND_RTF = 7.93 / 64.0


# ----------------------------------------------------------------- reference
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
def build(name: str, feat_dim: int, num_layers: int) -> nn.Module:
    if name == "LAP_ASTP_naive":
        return NaiveLAP_ASTP(feat_dim, num_layers)
    return get_speaker_model(name, feat_dim=feat_dim, num_layers=num_layers)


def time_step(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor, repeats: int,
              amp: bool) -> float:
    """Best wall seconds of forward + backward (after one warm-up step)."""
    model.train()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    best = float("inf")
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with ctx:
            out = model(x, lengths)
        out.float().square().mean().backward()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed steps after a warm-up; best kept")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=99, help="frames per utterance (2 s = 99)")
    p.add_argument("--models", default=",".join(["LAP_ASTP_naive", *SPEAKER_MODELS]),
                   help="comma-separated registry names (and LAP_ASTP_naive)")
    p.add_argument("--sizes", default="base,large", help="base (13 x 768), large (25 x 1024)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (the CPU's AMP)")
    p.add_argument("--frontend-rtf", type=float, default=BASE_PLUS_FRONTEND_RTF,
                   help="frozen Base+ frontend real-time factor (bench_frontend.py); "
                        "default: ANCHORS.md's 7.93 s per 32 x 2 s, fp32")
    p.add_argument("--frontend-rtf-large", type=float, default=None,
                   help="the same for a Large frontend (no ratio column when absent)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: smoke test")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    sizes = {"base": (13, 768), "large": (25, 1024)}
    if args.quick:
        sizes = {"base": (5, 64), "large": (7, 96)}
        args.batch, args.frames, args.repeats = 4, 20, 1
    wanted = [s for s in args.sizes.split(",") if s]
    for s in wanted:
        if s not in sizes:
            raise SystemExit(f"unknown size {s!r}; valid: {sorted(sizes)}")
    names = [n for n in args.models.split(",") if n]
    rtf = {"base": args.frontend_rtf, "large": args.frontend_rtf_large}
    if args.quick:
        rtf = {"base": None, "large": None}  # tiny sizes: a ratio would mean nothing
    audio_s = args.batch * args.frames * 0.02

    print(f"# backend forward + backward, batch {args.batch} x {args.frames} frames, "
          f"{'bf16 autocast' if args.amp else 'fp32'}, {args.threads} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"best of {args.repeats}")
    head = "| backend |"
    for s in wanted:
        head += f" params {s} | fwd+bwd {s} (s) |" + (" x frontend |" if rtf[s] else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in names:
        row = f"| {name} |"
        for s in wanted:
            num_layers, dim = sizes[s]
            torch.manual_seed(0)
            model = build(name, dim, num_layers)
            x = torch.randn(args.batch, num_layers, args.frames, dim)
            lengths = torch.full((args.batch,), args.frames)
            sec = time_step(model, x, lengths, args.repeats, args.amp)
            row += f" {count_parameters(model) / 1e6:.2f}M | {sec:.3f} |"
            if rtf[s]:
                row += f" {sec / (rtf[s] * audio_s):.2f} |"
            del model, x
        print(row, flush=True)


if __name__ == "__main__":
    main()
