"""VGG networks with batch normalisation (Simonyan & Zisserman 2015, configurations A and D), in the form used
on CIFAR: 3×3 convolutions, each followed by a batch norm and ReLU, max-pooling between groups, and one linear
layer on the pooled features (as in AB-training's VGG-16 on CIFAR-10).

For small inputs, a pooling step that would take the side below one pixel is left out, so any input size
works (28×28 keeps four of the five pools); global average pooling then gives one feature per channel. The
model is an ``nn.Sequential`` of blocks (one per convolution, the pools joining the block before them, then the
head), so direct-feedback methods put a point after every convolution block.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .registry import MODELS

#: Channels per convolution; "M" is a max-pool.
CONFIGURATIONS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def vgg(layout: Sequence[int | str], input_shape: Sequence[int], num_outputs: int,
        output_activation: nn.Module | None = None) -> nn.Sequential:
    if len(input_shape) != 3:
        raise ValueError(f"vgg needs image inputs (channels, height, width), got shape {tuple(input_shape)}")
    channels, side = input_shape[0], min(input_shape[1:])
    blocks: list[nn.Module] = []
    for item in layout:
        if item == "M":
            if side >= 2:
                blocks[-1].append(nn.MaxPool2d(2))
                side //= 2
            continue
        blocks.append(nn.Sequential(nn.Conv2d(channels, item, 3, padding=1, bias=False), nn.BatchNorm2d(item),
                                    nn.ReLU()))
        channels = item
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs),
                         output_activation or nn.Identity())
    return nn.Sequential(*blocks, head)


for _name, _layout in CONFIGURATIONS.items():
    convolutions = sum(1 for item in _layout if item != "M")
    MODELS.register(_name, f"{_name.upper()} with batch norm: {convolutions} 3x3 conv blocks, pools, a linear "
                           f"layer")(lambda input_shape, num_outputs, output_activation=None, layout=_layout:
                                     vgg(layout, input_shape, num_outputs, output_activation))
