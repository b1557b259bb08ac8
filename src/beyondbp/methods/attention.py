"""``nn.MultiheadAttention`` under layer-wise feedback: its four projections as layers of their own.

``nn.MultiheadAttention`` keeps the query, key and value projections in one parameter
(``in_proj_weight``, or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` when the key
and value widths differ) and calls a fused function, so patching ``Linear`` layers would miss
them. Here each projection is a :class:`Projection` (a view of its rows of the packed
weight) that the layer-wise methods treat like a ``Linear`` layer, and the module's forward
is replaced during a step by :func:`attention_forward`: the same computation (Vaswani et al.
2017, Eq. 1: ``softmax(Q Kᵀ / √d + mask) V`` per head), written with the projections'
feedback-patched linear maps, so that FA, sign symmetry and LDFA send ``δ F`` instead of
``δ W`` through every projection, the output projection (a ``Linear`` child) included.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedModelError

PROJECTIONS = ("q", "k", "v")


class Projection:
    """The query (``"q"``), key (``"k"``) or value (``"v"``) projection of an attention module."""

    def __init__(self, attention: nn.MultiheadAttention, which: str):
        self.attention, self.which = attention, which
        self.index = PROJECTIONS.index(which)

    @property
    def weight(self) -> Tensor:
        a = self.attention
        if a.in_proj_weight is not None:
            return a.in_proj_weight.chunk(3)[self.index]
        return getattr(a, f"{self.which}_proj_weight")

    @property
    def bias(self) -> Tensor | None:
        a = self.attention
        return None if a.in_proj_bias is None else a.in_proj_bias.chunk(3)[self.index]


def projections(name: str, attention: nn.MultiheadAttention) -> dict[str, Projection]:
    """``{"NAME.q_proj": ..., "NAME.k_proj": ..., "NAME.v_proj": ...}``, or an error for the options we do not cover."""
    if attention.bias_k is not None or attention.add_zero_attn:
        raise UnsupportedModelError(f"layer-wise feedback cannot handle attention '{name}' with add_bias_kv or "
                                    f"add_zero_attn")
    return {f"{name}.{which}_proj": Projection(attention, which) for which in PROJECTIONS}


def attention_forward(attention: nn.MultiheadAttention, project: dict[str, Callable[[Tensor], Tensor]],
                      query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                      need_weights: bool = True, attn_mask: Tensor | None = None,
                      average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """``nn.MultiheadAttention.forward`` with ``project[which](x)`` as the q/k/v projections."""
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    elif attention.batch_first:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    # from here on: [length, batch, width], as in torch's own implementation
    heads, (length, batch, width) = attention.num_heads, query.shape
    head_dim = width // heads

    def split(x: Tensor) -> Tensor:  # [L, B, E] -> [B, heads, L, d]
        return x.reshape(x.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3)

    q, k, v = (split(project[which](x)) for which, x in zip(PROJECTIONS, (query, key, value)))
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=q.device).triu(1)
    for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
        if mask is None:
            continue
        if mask.dim() == 3:  # [batch * heads, L, S]
            mask = mask.view(batch, heads, *mask.shape[1:])
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores, dim=-1)
    attended = F.dropout(weights, attention.dropout, attention.training) @ v
    out = attention.out_proj(attended.permute(2, 0, 1, 3).reshape(length, batch, width))
    if attention.batch_first and not unbatched:
        out = out.transpose(0, 1)
    if unbatched:
        out = out.squeeze(1)
    if not need_weights:
        return out, None
    weights = weights.mean(dim=1) if average_attn_weights else weights
    return out, weights.squeeze(0) if unbatched else weights
