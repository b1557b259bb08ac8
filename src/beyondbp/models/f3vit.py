"""The transformer of the F³ paper (Flügel et al. 2023, "Feed-Forward Optimization With Delayed
Feedback for Neural Networks", ViT experiment of its published code) as a sequence of blocks.

Unlike :func:`~beyondbp.models.vit.vit`, ``width`` is the width of the whole token sequence:

- block 1: the flattened image, one dense ``Linear`` to ``width``, cut into ``tokens`` tokens of
  ``width / tokens`` features (``tokens`` = number of ``patch × patch`` patches; a dense layer on
  the image needs no patch reordering and no position embedding), then a transformer block;
- blocks 2 … depth−1: transformer blocks (pre-norm, as in :mod:`.vit`), each flattened back to
  ``width`` at its output, so direct feedback reaches every token position through its own columns;
- block ``depth``: ``Linear(width, width)`` and the activation (the head's hidden layer);
- the output block: ``Linear(width, outputs)``.

So ``depth`` counts the hidden blocks as the paper does (``depth − 1`` transformer blocks). The
paper's setting: depth 5, width 512 (16 tokens of 32 features for patch 7 on 28×28), 8 heads of
dimension 64, MLP 128, tanh. Its attention projections have no bias; here they have one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .registry import MODELS
from .registry import activation as make_activation
from .vit import TransformerBlock, TransformerShape, patch_grid


def token_block(tokens: int, width: int, heads: int, head_dim: int, mlp: int, activation: str,
                norm: str = "pre") -> list[nn.Module]:
    """A transformer block on ``[B, width]`` seen as ``tokens`` tokens, flattened again at its output."""
    return [nn.Unflatten(1, (tokens, width // tokens)),
            TransformerBlock(width // tokens, heads, head_dim, mlp, activation, norm=norm), nn.Flatten()]


@MODELS.register("f3vit", "the F³ paper's transformer: dense embedding cut into tokens, transformer blocks, "
                          "MLP head (--width is the whole sequence's width, --depth the hidden blocks)")
def f3vit(input_shape: Sequence[int], num_outputs: int, shape: TransformerShape = TransformerShape(),
          activation: str = "tanh", output_activation: nn.Module | None = None) -> nn.Sequential:
    """``patch`` defaults to a quarter of the image side (16 tokens); ``head_dim`` to the token width
    divided by ``heads``; ``width`` is the whole sequence's width, ``depth`` the hidden blocks."""
    depth, width, heads, head_dim, mlp = shape.depth, shape.width, shape.heads, shape.head_dim, shape.mlp
    patch, tokens = patch_grid("f3vit", input_shape, shape.patch)
    if width % tokens:
        raise ValueError(f"width {width} is not a multiple of the {tokens} tokens of patch size {patch}")
    if depth < 2:
        raise ValueError(f"f3vit needs depth of at least 2 (a transformer block and the head's hidden layer), "
                         f"got {depth}")
    head_dim = head_dim or max(1, width // tokens // heads)
    first = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width),
                          *token_block(tokens, width, heads, head_dim, mlp, activation, shape.norm))
    middle = [nn.Sequential(*token_block(tokens, width, heads, head_dim, mlp, activation, shape.norm))
              for _ in range(depth - 2)]
    head_hidden = nn.Sequential(nn.Linear(width, width), make_activation(activation))
    output = nn.Sequential(nn.Linear(width, num_outputs), output_activation or nn.Identity())
    return nn.Sequential(first, *middle, head_hidden, output)
