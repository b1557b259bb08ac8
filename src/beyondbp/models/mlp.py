"""Multi-layer perceptron as a sequence of blocks: ``[Linear, activation]`` per hidden layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .registry import MODELS
from .registry import activation as make_activation


@MODELS.register("mlp", "fully connected: one block per hidden layer (Linear + activation), then the output block")
def mlp(
    input_shape: Sequence[int] | int,
    num_outputs: int,
    hidden: Sequence[int] = (500,),
    activation: str = "tanh",
    output_activation: nn.Module | None = None,
) -> nn.Sequential:
    """An MLP ``input -> hidden[0] -> ... -> num_outputs``; the first block flattens its input.

    Block ``i`` is ``Linear(n_{i-1}, n_i)`` followed by the activation; the last block is
    ``Linear(n_last, num_outputs)`` followed by ``output_activation`` (identity if None).
    """
    in_features = input_shape if isinstance(input_shape, int) else math.prod(input_shape)
    widths = [in_features, *hidden]
    if any(w <= 0 for w in widths) or num_outputs <= 0:
        raise ValueError(f"layer widths must be positive, got {widths} -> {num_outputs}")
    blocks = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers = [nn.Flatten()] if i == 0 else []
        blocks.append(nn.Sequential(*layers, nn.Linear(n_in, n_out), make_activation(activation)))
    head = [nn.Flatten()] if not hidden else []
    head += [nn.Linear(widths[-1], num_outputs), output_activation or nn.Identity()]
    blocks.append(nn.Sequential(*head))
    return nn.Sequential(*blocks)
