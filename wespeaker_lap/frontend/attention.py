"""WavLM self-attention through ``torch.nn.functional.scaled_dot_product_attention``.

WavLM (Chen et al., "WavLM: Large-Scale Self-Supervised Pre-Training for Full
Stack Speech Processing", IEEE JSTSP 2022) adds to each attention logit a
*gated relative-position bias*: a learned bias per head and relative-distance
bucket (T5-style buckets), scaled per query frame by a gate computed from that
frame's hidden state (Section III-B of the paper). transformers runs it through
``F.multi_head_attention_forward`` with ``need_weights=True``, which
materialises the attention weights and, in bfloat16 on CPU, copies every
batched matrix product's operands (the main reason the bfloat16 forward was
slower than float32).

:func:`use_sdpa_attention` swaps each ``WavLMAttention`` module of a model for
:class:`WavLMSdpaAttention`, a subclass with the same parameters (state-dict
keys unchanged) whose forward computes exactly the same function:

* the gated bias and the key padding mask become **one additive float mask**
  ``(B, H, t_q, T)`` (``-inf`` on padded keys), passed to SDPA as ``attn_mask``;
* the bias is kept between layers as a table over relative offsets
  ``(2T - 1, H)`` instead of transformers' ``(B * H, T, T)`` tensor (the bucket
  of a query/key pair depends only on ``key - query``); a block of bias rows is
  a strided (Toeplitz) view of that table, so building the mask is one
  multiplication by the gate, with no gather; a batch without padding skips the
  padding fill;
* queries are processed in blocks so that at most ``mask_budget`` mask elements
  exist at a time: peak attention memory is ``B * H * block * T`` instead of
  several ``B * H * T^2`` tensors (transformers keeps the bias, the gated bias
  and the attention weights).

Valid frames equal transformers' eager attention to float rounding (checked in
``tests/test_frontend_attention.py`` to 1e-5 in float32, on padded batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

#: Mask elements (B * H * t_q * T) materialised at once: 2^26 = 256 MiB in float32.
DEFAULT_MASK_BUDGET = 1 << 26


class WavLMSdpaAttention(nn.Module):
    """Drop-in forward for transformers' ``WavLMAttention`` (same parameters and keys).

    Not constructed directly: :func:`use_sdpa_attention` re-classes existing
    modules, so weights, devices and dtypes stay as loaded.

    forward(hidden (B, T, D), attention_mask (B, T) 1 = valid, position_bias)
    -> (out (B, T, D), None, position_bias) where ``position_bias`` is the
    ``(2T - 1, H)`` table over relative offsets that later layers reuse.
    """

    mask_budget: int = DEFAULT_MASK_BUDGET

    def relative_bias_table(self, t: int) -> torch.Tensor:
        """Bias per relative offset ``key - query`` in ``[-(t-1), t-1]``: (2t - 1, H)."""
        device = self.rel_attn_embed.weight.device
        offsets = torch.arange(-(t - 1), t, dtype=torch.long, device=device)
        return self.rel_attn_embed(self._relative_positions_bucket(offsets))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        index: int = 0,
        **kwargs,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        b, t, d = hidden_states.shape
        h, hd = self.num_heads, self.head_dim
        if position_bias is None:
            position_bias = self.relative_bias_table(t)  # (2t - 1, H)
        if position_bias.shape != (2 * t - 1, h):
            raise ValueError(
                f"WavLM SDPA attention got a position bias of shape {tuple(position_bias.shape)}; "
                f"expected the relative-offset table ({2 * t - 1}, {h}) that its first layer "
                "makes (are eager and SDPA attention modules mixed in one model?)"
            )
        # Gate per (batch, head, query frame), as in the paper and transformers: (B, H, T, 1).
        heads = hidden_states.view(b, t, h, hd).permute(0, 2, 1, 3)
        proj = self.gru_rel_pos_linear(heads).view(b, h, t, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0

        q = self.q_proj(hidden_states).view(b, t, h, hd).transpose(1, 2)
        k = self.k_proj(hidden_states).view(b, t, h, hd).transpose(1, 2)
        v = self.v_proj(hidden_states).view(b, t, h, hd).transpose(1, 2)
        key_pad = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            key_pad = ~attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        dropout = self.dropout if self.training else 0.0

        # bias[h, q, k] = table[k - q + T - 1, h] = windows[h, T - 1 - q, k]: a strided view,
        # no gather. Its rows run backwards in q, so each query block is fed reversed.
        windows = position_bias.t().contiguous().unfold(1, t, 1)  # (H, T, T) view
        block = max(1, min(t, self.mask_budget // max(1, b * h * t)))
        outs = []
        for q0 in range(0, t, block):
            q1 = min(t, q0 + block)
            mask = gate[:, :, q0:q1].flip(2) * windows[:, t - q1 : t - q0]  # (B, H, tq, T)
            if key_pad is not None:
                mask.masked_fill_(key_pad, float("-inf"))
            out = F.scaled_dot_product_attention(
                q[:, :, q0:q1].flip(2), k, v, attn_mask=mask.to(q.dtype), dropout_p=dropout
            )
            outs.append(out.flip(2))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        out = out.transpose(1, 2).reshape(b, t, d)
        return self.out_proj(out), None, position_bias


def use_sdpa_attention(model: nn.Module, mask_budget: int = DEFAULT_MASK_BUDGET) -> int:
    """Re-class every transformers ``WavLMAttention`` in ``model`` as :class:`WavLMSdpaAttention`.

    Returns how many modules were switched (0 for models without WavLM attention).
    """
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    switched = 0
    for module in model.modules():
        if type(module) is WavLMAttention:
            module.__class__ = _sdpa_class(WavLMAttention)
            module.mask_budget = int(mask_budget)
            switched += 1
    return switched


_CLASSES: dict[type, type] = {}


def _sdpa_class(base: type) -> type:
    """``WavLMSdpaAttention`` mixed over transformers' class (isinstance checks keep working)."""
    if base not in _CLASSES:
        _CLASSES[base] = type("WavLMSdpaAttention", (WavLMSdpaAttention, base), {})
    return _CLASSES[base]
