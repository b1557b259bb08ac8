"""Data augmentation for images, drawn from a seeded generator so that a run (and its resume) is reproducible.

``crop-flip``: the standard CIFAR augmentation (He et al. 2016, Sec. 4.2): each image padded by ``padding``
pixels on every side (zeros: the mean after standardisation) and cropped back to its size at a random offset,
then flipped left-right with probability ½. Offsets and flips are drawn on the CPU from the epoch's augmentation
generator (a function of the seed and the epoch), for the whole global batch before data-parallel ranks take
their slices, so every execution sees the same images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BeyondBPError

AUGMENTATIONS = ("crop-flip",)


class CropFlip:
    """Random crop after zero padding, and a horizontal flip (see the module docstring)."""

    def __init__(self, padding: int = 4):
        if padding < 0:
            raise BeyondBPError(f"crop padding must be at least 0, got {padding}")
        self.padding = padding

    def check(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 3:
            raise BeyondBPError(f"augmentation crop-flip needs images [channels, height, width]; this data's "
                                f"samples have shape {tuple(input_shape)}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, _, height, width = x.shape
        p = self.padding
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        padded = F.pad(x, (p, p, p, p))
        rows = dy[:, None] + torch.arange(height, device=x.device)
        columns = torch.arange(width, device=x.device).expand(n, width)
        columns = dx[:, None] + torch.where(flip[:, None], width - 1 - columns, columns)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]


def make_augmentation(name: str | None, padding: int = 4) -> CropFlip | None:
    if name is None:
        return None
    if name not in AUGMENTATIONS:
        raise BeyondBPError(f"unknown augmentation '{name}'; known: {', '.join(AUGMENTATIONS)}")
    return CropFlip(padding)
