"""Test accuracy of a suite's finished ResNet runs with the running batch-norm statistics they stored, and with
statistics recomputed from the training data at their final weights (a cumulative average over 20 training
batches of 200 images, in train mode, without gradients; weights untouched).

A large gap says the running averages (momentum 0.1) lag behind weights that moved fast in the last steps,
not that the weights are bad. Reads ``runs/bench/SUITE/DATASET/MODEL/METHOD/seed*/checkpoint.pt``:

    python benchmarks/checks/bn_statistics.py ecosystem fashion-mnist resnet20 \
        > benchmarks/checks/bn-statistics-2026-12-05.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
from torch import nn

from beyondbp.data import load_dataset
from beyondbp.data.options import training_subset
from beyondbp.models.registry import MODELS


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    right = sum(int((model(x[i:i + 500]).argmax(1) == labels[i:i + 500]).sum()) for i in range(0, len(x), 500))
    return right / len(x)


@torch.no_grad()
def recompute_statistics(model: nn.Module, x: torch.Tensor, batches: int = 20, size: int = 200) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for i in range(batches):
        model(x[order[i * size:(i + 1) * size]])


def main(suite: str, dataset: str, model_name: str) -> None:
    data = load_dataset(dataset)
    train = training_subset(data, 4000).train.x
    x, labels = data.test.x, data.test.t.argmax(1)
    writer = csv.writer(sys.stdout)
    writer.writerow(["method", "run", "stored_statistics", "recomputed_statistics"])
    for path in sorted(Path("runs/bench", suite, dataset, model_name).glob("*/seed*/checkpoint.pt")):
        model = MODELS.get(model_name)(data.train.input_shape, data.train.num_outputs)
        model.load_state_dict(torch.load(path, weights_only=False)["model"])
        stored = accuracy(model, x, labels)
        recompute_statistics(model, train)
        writer.writerow([path.parts[-3], path.parts[-2], f"{stored:.4f}", f"{accuracy(model, x, labels):.4f}"])
        sys.stdout.flush()


if __name__ == "__main__":
    main(*sys.argv[1:4])
