"""A causal transformer language model (GPT: Radford et al. 2018, 2019) as a sequence of blocks.

Blocks: the embedding (token embedding plus learned position embedding), ``depth`` transformer blocks
with *causal* self-attention (position ``t`` attends to positions ``≤ t``) and an MLP, pre-norm by default
(``x + MHA(LN(x))``, then ``x + MLP(LN(x))``) or post-norm with ``norm="post"`` (:class:`~.vit.TransformerBlock`),
and the output block (LayerNorm, Linear to the vocabulary): inputs are token ids
``[batch, T]``, outputs next-token logits ``[batch, T, vocabulary]``. The blocks are those of :mod:`.vit`,
so direct feedback enters at every block's output by default (Launay et al. 2020's feedback per block)
and layer-wise feedback replaces every projection, each a ``Linear``. ``tie_weights`` makes the output
layer use the token embedding's matrix (Press & Wolf 2017); every method sums what each owner's rule
gives that shared matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .registry import MODELS
from .vit import PositionEmbedding, TransformerBlock, TransformerShape

INIT_STD = 0.02


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` drawn from ``N(0, 0.02²)`` (GPT-2's initialisation), so that a tied output layer starts
    with small logits."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=INIT_STD)


@MODELS.register("gpt", "causal transformer language model: token and position embeddings, --depth pre-norm blocks "
                        "of causal self-attention and MLP, next-token logits (--tie-weights)")
def gpt(input_shape: Sequence[int], num_outputs: int, shape: TransformerShape = TransformerShape(),
        activation: str = "gelu", tie_weights: bool = False, output_activation: nn.Module | None = None
        ) -> nn.Sequential:
    """Token ids ``[batch, T]`` (``input_shape = (T,)``) to logits over ``num_outputs`` classes (the vocabulary)
    per position; ``head_dim`` defaults to ``width // heads``."""
    if len(input_shape) != 1:
        raise ValueError(f"gpt needs token ids [batch, tokens], got samples of shape {tuple(input_shape)}")
    width = shape.width
    tokens = TokenEmbedding(num_outputs, width)
    embed = nn.Sequential(tokens, PositionEmbedding(input_shape[0], width))
    head_dim = shape.head_dim or max(1, width // shape.heads)
    blocks = [TransformerBlock(width, shape.heads, head_dim, shape.mlp, activation, causal=True, norm=shape.norm)
              for _ in range(shape.depth)]
    output = nn.Linear(width, num_outputs)
    if tie_weights:
        output.weight = tokens.weight
    return nn.Sequential(embed, *blocks, nn.Sequential(nn.LayerNorm(width), output, output_activation or nn.Identity()))

