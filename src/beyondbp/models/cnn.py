"""Convolutional network as a sequence of blocks: ``[Conv2d, activation, MaxPool2d(2)]`` per conv
block, then fully connected blocks, then the output block."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .registry import MODELS
from .registry import activation as make_activation


@MODELS.register("cnn", "conv blocks (3x3 conv, activation, 2x2 max-pool; --channels), then dense blocks (--hidden)")
def cnn(
    input_shape: Sequence[int],
    num_outputs: int,
    channels: Sequence[int] = (32, 64),
    hidden: Sequence[int] = (128,),
    activation: str = "relu",
    kernel_size: int = 3,
    output_activation: nn.Module | None = None,
) -> nn.Sequential:
    """Each conv block keeps the spatial size (padding ``k // 2``) and halves it by pooling, so an
    input of ``C × H × W`` leaves the conv part as ``channels[-1] × H/2^d × W/2^d``."""
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs image inputs (channels, height, width), got shape {tuple(input_shape)}")
    in_channels, height, width = input_shape
    if min(height, width) < 2 ** len(channels):
        raise ValueError(f"{len(channels)} conv blocks halve {height}x{width} too often; use fewer channels")
    blocks, c = [], in_channels
    for out_channels in channels:
        blocks.append(nn.Sequential(nn.Conv2d(c, out_channels, kernel_size, padding=kernel_size // 2),
                                    make_activation(activation), nn.MaxPool2d(2)))
        c, height, width = out_channels, height // 2, width // 2
    features = c * height * width
    for i, n in enumerate(hidden):
        blocks.append(nn.Sequential(*([nn.Flatten()] if i == 0 else []), nn.Linear(features, n),
                                    make_activation(activation)))
        features = n
    blocks.append(nn.Sequential(*([] if hidden else [nn.Flatten()]), nn.Linear(features, num_outputs),
                                output_activation or nn.Identity()))
    return nn.Sequential(*blocks)
