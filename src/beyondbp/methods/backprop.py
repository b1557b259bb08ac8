"""Backpropagation: the exact gradient, the reference every other method is measured against."""

from __future__ import annotations

from torch import Tensor, nn

from ..objectives import Objective
from .base import Method, StepResult


class Backprop(Method):
    """Exact gradient by reverse-mode automatic differentiation (Rumelhart et al. 1986)."""

    name = "bp"
    supports_loss_scaling = True
    supports_compile = True

    def compute(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor | None, objective: Objective) -> StepResult:
        output = model(x)
        loss = objective(output, t)
        (loss * self.loss_scale).backward()
        return StepResult(output.detach(), loss.detach())
