"""Evaluation of a model on a data set: loss and accuracy, MAE and RMSE in original units, or, for next-token
prediction, the loss per token with its perplexity and bits."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Dataset, loaders
from .models.outputs import ensure_output
from .objectives import Objective, token_classes

#: The headline metric of each task and whether larger is better.
HEADLINE = {"classification": ("test_accuracy", True), "regression": ("test_mae", False), "lm": ("test_loss", False)}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset | Iterable, objective: Objective, task: str,
             target_scale: Tensor | None = None, batch_size: int = 1000,
             device: torch.device | str = "cpu", prefix: str = "test") -> dict[str, float]:
    """``{prefix}_loss`` and ``{prefix}_accuracy`` (classification) or ``{prefix}_mae`` and
    ``{prefix}_rmse`` (regression, multiplied back to the targets' original units). ``dataset`` is an
    in-memory Dataset or any iterable of ``(x, t)`` / ``(x, t, index)`` batches. Task ``lm`` (outputs
    ``[batch, T, C]``): see :func:`token_metrics`."""
    if task == "lm":
        return token_metrics(model, dataset, batch_size, device, prefix)
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


def token_metrics(model: nn.Module, dataset: Dataset | Iterable, batch_size: int, device: torch.device | str,
                  prefix: str) -> dict[str, float]:
    """Next-token prediction, over every target token of the data (padding excluded): ``{prefix}_loss`` (the
    cross-entropy in nats per token), ``{prefix}_perplexity`` (``exp`` of it), ``{prefix}_bits`` (bits per
    token: bits per character on character- or byte-level data) and ``{prefix}_accuracy`` (the next token
    predicted by the largest output)."""
    was_training = model.training
    ensure_output(model).eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, t, _ in loaders.iterate(dataset, batch_size, None, device):
        y = model(x).float()
        classes, kept = token_classes(t)
        losses = F.cross_entropy(y.transpose(1, 2), classes, reduction="none")
        total_loss += losses[kept].sum().item()
        correct += (y.argmax(dim=-1) == classes)[kept].sum().item()
        n += int(kept.sum())
    model.train(was_training)
    loss = total_loss / max(n, 1)
    return {f"{prefix}_loss": loss, f"{prefix}_perplexity": math.exp(min(loss, 700.0)),
            f"{prefix}_bits": loss / math.log(2), f"{prefix}_accuracy": correct / max(n, 1)}
