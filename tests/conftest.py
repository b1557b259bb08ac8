"""Shared fixtures: a tiny two-block network with known weights, and a small data set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp.data import Dataset, DataSplit


@pytest.fixture
def tiny():
    """2 -> 3 (tanh) -> 2 (sigmoid), fixed weights, a batch of two samples with one-hot targets."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(2, 3), nn.Tanh()),
        nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()),
    )
    with torch.no_grad():
        model[0][0].weight.copy_(torch.tensor([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]]))
        model[0][0].bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
        model[1][0].weight.copy_(torch.tensor([[0.7, -0.4, 0.3], [-0.2, 0.6, 0.9]]))
        model[1][0].bias.copy_(torch.tensor([0.0, 0.1]))
    x = torch.tensor([[1.0, 2.0], [-1.5, 0.5]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    index = torch.tensor([0, 1])
    return model, x, t, index


def blobs(n: int = 240, seed: int = 0) -> DataSplit:
    """Three well separated Gaussian classes in 4 dimensions: any working method learns them."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    x = centres[labels] + 0.5 * torch.randn(n, 4, generator=g)
    t = torch.nn.functional.one_hot(labels, 3).float()
    cut = n * 3 // 4
    return DataSplit("blobs", "classification", Dataset(x[:cut], t[:cut]), Dataset(x[cut:], t[cut:]))


@pytest.fixture
def blob_data() -> DataSplit:
    return blobs()
