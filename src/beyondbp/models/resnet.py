"""Residual networks with batch normalisation: the CIFAR ResNets of He et al. 2016 and ResNet-18.

``resnet20``/``32``/``56`` (He et al. 2016, Sec. 4.2): a 3×3 convolution to 16 channels, then three stages of
``n`` basic blocks (``6n + 2`` layers: n = 3, 5, 9) with 16, 32 and 64 channels, the second and third starting
with stride 2; global average pooling and one linear layer. A basic block is ``relu(x + BN(conv(relu(BN(conv
x)))))``; where a block changes the shape, the shortcut is option A (the paper's CIFAR choice: every second
pixel, channels padded with zeros; no parameters) or B (a 1×1 convolution with stride and a batch norm).
``resnet18``: the same blocks in four stages of two, 64 to 512 channels, with a 3×3 stem and no max-pool, the
usual variant for small images (as in the DFA results of Nature Communications 2022 on CIFAR-10).

Any input size and channel count; ReLU throughout (the activation setting does not apply). The model is not a
``Sequential``: its blocks sit in the stacks ``layer1``, ``layer2``, ... so that direct-feedback methods put a
feedback point at every residual block by default (:mod:`beyondbp.methods.points`); name the stages
(``--feedback-points layer1,layer2,layer3``) for one point per stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import MODELS

SHORTCUTS = ("A", "B")


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norms, added to the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.pad = stride, out_channels - in_channels
        self.projection = None
        if shortcut == "B" and (stride != 1 or in_channels != out_channels):
            self.projection = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def shortcut(self, x: Tensor) -> Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, stages of basic blocks (``layer1`` ...), average pooling and a linear head."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int, blocks: Sequence[int],
                 widths: Sequence[int], shortcut: str = "A", output_activation: nn.Module | None = None):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"resnets need image inputs (channels, height, width), got shape {tuple(input_shape)}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut '{shortcut}'; known: {', '.join(SHORTCUTS)}")
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        channels = widths[0]
        for stage, (count, width) in enumerate(zip(blocks, widths), start=1):
            stride = 1 if stage == 1 else 2
            layers = [BasicBlock(channels if i == 0 else width, width, stride if i == 0 else 1, shortcut)
                      for i in range(count)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            channels = width
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs),
                                  output_activation or nn.Identity())
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        for child in self.children():
            x = child(x)
        return x


def _cifar_resnet(n: int):
    def build(input_shape: Sequence[int], num_outputs: int, shortcut: str = "A",
              output_activation: nn.Module | None = None) -> ResNet:
        return ResNet(input_shape, num_outputs, (n, n, n), (16, 32, 64), shortcut, output_activation)
    return build


for _n, _depth in ((3, 20), (5, 32), (9, 56)):
    MODELS.register(f"resnet{_depth}", f"CIFAR ResNet-{_depth} (He et al. 2016): 3 stages of {_n} basic blocks, "
                                       f"16-64 channels, batch norm; --shortcut A or B")(_cifar_resnet(_n))


@MODELS.register("resnet18", "ResNet-18: 4 stages of 2 basic blocks, 64-512 channels, 3x3 stem, batch norm")
def resnet18(input_shape: Sequence[int], num_outputs: int, output_activation: nn.Module | None = None) -> ResNet:
    return ResNet(input_shape, num_outputs, (2, 2, 2, 2), (64, 128, 256, 512), "B", output_activation)
