"""Evaluation of a model on a data set: loss and accuracy, or MAE and RMSE in original units."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .data import Dataset, loaders
from .models.outputs import ensure_output
from .objectives import Objective

#: The headline metric of each task and whether larger is better.
HEADLINE = {"classification": ("test_accuracy", True), "regression": ("test_mae", False)}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset | Iterable, objective: Objective, task: str,
             target_scale: Tensor | None = None, batch_size: int = 1000,
             device: torch.device | str = "cpu", prefix: str = "test") -> dict[str, float]:
    """``{prefix}_loss`` and ``{prefix}_accuracy`` (classification) or ``{prefix}_mae`` and
    ``{prefix}_rmse`` (regression, multiplied back to the targets' original units). ``dataset`` is an
    in-memory Dataset or any iterable of ``(x, t)`` / ``(x, t, index)`` batches."""
    was_training = model.training
    ensure_output(model).eval()
    total_loss, correct, abs_error, sq_error, n = 0.0, 0, 0.0, 0.0, 0
    scale = target_scale.to(device) if target_scale is not None else None
    for x, t, _ in loaders.iterate(dataset, batch_size, None, device):
        y = model(x)
        t = objective.targets(t, y.shape[1])
        n += len(x)
        total_loss += objective.per_sample(y, t).sum().item()
        if task == "classification":
            correct += (y.argmax(dim=1) == t.argmax(dim=1)).sum().item()
        else:
            error = (y - t) * scale if scale is not None else y - t
            abs_error += error.abs().mean(dim=1).sum().item()
            sq_error += error.pow(2).mean(dim=1).sum().item()
    model.train(was_training)
    result = {f"{prefix}_loss": total_loss / n}
    if task == "classification":
        result[f"{prefix}_accuracy"] = correct / n
    else:
        result[f"{prefix}_mae"] = abs_error / n
        result[f"{prefix}_rmse"] = (sq_error / n) ** 0.5
    return result
