"""Batch-norm running statistics recomputed at the current weights before an evaluation.

A batch norm evaluates with running averages of the batch statistics it saw in training (momentum 0.1 in
PyTorch). When the weights move fast, as under feedback alignment with a large learning rate, those averages
lag behind the weights they are used with, and the test accuracy measures the lag rather than the weights.
Recomputing them from training batches at the final weights is the remedy of Ioffe & Szegedy 2015 (Algorithm 2,
the population statistics after training) and the practice of "precise BN" (Wu & Johnson 2021, "Rethinking
'Batch' in BatchNorm", section 3): a cumulative average over a fixed number of batches, in train mode, without
gradients. The weights are untouched, and training is unchanged: training-mode batch norm uses each batch's
own statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch norms of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, inputs: Iterable[Tensor]) -> int:
    """Replace the running mean and variance of every batch norm of ``model`` by their cumulative average over
    the batches ``inputs`` (each norm in train mode, every other module in eval mode, so that dropout draws no
    random numbers); every module's mode and momentum are restored. Returns the number of batches used."""
    norms = batch_norms(model)
    modes = {module: module.training for module in model.modules()}
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # PyTorch's cumulative moving average
    model.eval()
    for norm in norms:
        norm.train()
    count = 0
    try:
        for x in inputs:
            model(x)
            count += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, training in modes.items():
            module.training = training
    return count
