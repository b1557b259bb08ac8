"""Vision Transformer (Dosovitskiy et al. 2021) as a sequence of blocks.

Blocks: patch embedding (non-overlapping patches, a Linear projection, learned position
embeddings), ``depth`` pre-norm transformer blocks (``x + MHA(LN(x))``, then
``x + MLP(LN(x))``), and the output block (LayerNorm, mean over tokens, Linear). All
projections, including those of the attention, are ``nn.Linear`` so that layer-wise
feedback methods can replace them. The F³ paper's transformer is a different network
(a dense embedding, no pooling, an MLP head): :mod:`.f3vit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import MODELS
from .registry import activation as make_activation


class PositionEmbedding(nn.Module):
    """Learned additive position embeddings (no weight transport: the gradient passes unchanged); a shorter
    sequence (a prompt) takes the first positions."""

    def __init__(self, tokens: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, tokens, width) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight[:, :x.shape[1]]


class Patches(nn.Module):
    """``[B, C, H, W]`` -> ``[B, (H/p)(W/p), C p p]``: non-overlapping ``p × p`` patches."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.unfold(x, self.patch, stride=self.patch).transpose(1, 2)


def causal_mask(tokens: int, device: torch.device) -> Tensor:
    """``[T, T]`` additive mask: 0 where position ``t`` may attend to ``s ≤ t``, ``-inf`` above the diagonal."""
    return torch.full((tokens, tokens), float("-inf"), device=device).triu(diagonal=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``Linear`` projections for queries, keys, values and output;
    ``causal``: each position attends to itself and the positions before it only."""

    def __init__(self, width: int, heads: int, head_dim: int, causal: bool = False):
        super().__init__()
        self.heads, self.head_dim, self.causal = heads, head_dim, causal
        inner = heads * head_dim
        self.query, self.key, self.value = (nn.Linear(width, inner) for _ in range(3))
        self.out = nn.Linear(inner, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        split = lambda z: z.view(b, n, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if self.causal:
            scores = scores + causal_mask(n, x.device)
        weights = torch.softmax(scores, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    """Self-attention then an MLP, each in a residual branch. ``norm="pre"`` (GPT-2, ViT): ``x + f(LN(x))``;
    ``norm="post"`` (Vaswani et al. 2017, and the transformers Launay et al. 2020 trained with DFA):
    ``LN(x + f(x))``, so the block's output, where direct feedback enters, is normalised."""

    def __init__(self, width: int, heads: int, head_dim: int, mlp: int, activation: str, causal: bool = False,
                 norm: str = "pre"):
        super().__init__()
        if norm not in NORM_PLACES:
            raise ValueError(f"unknown norm place '{norm}'; known: {', '.join(NORM_PLACES)}")
        self.post = norm == "post"
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads, head_dim, causal)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), make_activation(activation), nn.Linear(mlp, width))

    def forward(self, x: Tensor) -> Tensor:
        if self.post:
            x = self.norm1(x + self.attention(x))
            return self.norm2(x + self.mlp(x))
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def patch_grid(model: str, input_shape: Sequence[int], patch: int | None) -> tuple[int, int]:
    """The patch size (default a quarter of the image side) and the number of patches, for
    image inputs ``(channels, height, width)`` that the patches tile exactly."""
    if len(input_shape) != 3:
        raise ValueError(f"{model} needs image inputs (channels, height, width), got shape {tuple(input_shape)}")
    _, height, width = input_shape
    patch = patch or max(1, height // 4)
    if height % patch or width % patch:
        raise ValueError(f"patch size {patch} does not divide the {height}x{width} image")
    return patch, (height // patch) * (width // patch)


#: Where a transformer block's layer norms sit (see :class:`TransformerBlock`).
NORM_PLACES = ("pre", "post")


@dataclass(frozen=True)
class TransformerShape:
    """The sizes that ``vit``, ``f3vit`` and ``gpt`` share (each model's docstring says how it reads them)."""

    depth: int = 4
    width: int = 128
    heads: int = 4
    head_dim: int | None = None
    mlp: int = 256
    patch: int | None = None
    norm: str = "pre"


class MeanTokens(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1)


@MODELS.register("vit", "vision transformer: patch embedding, --depth transformer blocks, mean-pooled head")
def vit(input_shape: Sequence[int], num_outputs: int, shape: TransformerShape = TransformerShape(),
        activation: str = "gelu", output_activation: nn.Module | None = None) -> nn.Sequential:
    """``patch`` defaults to a quarter of the image side (7 on 28×28, 8 on 32×32, 2 on 8×8);
    ``head_dim`` to ``width // heads``."""
    depth, width, heads, head_dim, mlp = shape.depth, shape.width, shape.heads, shape.head_dim, shape.mlp
    patch, tokens = patch_grid("vit", input_shape, shape.patch)
    channels = input_shape[0]
    head_dim = head_dim or max(1, width // heads)
    embed = nn.Sequential(Patches(patch), nn.Linear(channels * patch * patch, width), PositionEmbedding(tokens, width))
    blocks = [TransformerBlock(width, heads, head_dim, mlp, activation, norm=shape.norm) for _ in range(depth)]
    head = nn.Sequential(nn.LayerNorm(width), MeanTokens(), nn.Linear(width, num_outputs),
                         output_activation or nn.Identity())
    return nn.Sequential(embed, *blocks, head)
