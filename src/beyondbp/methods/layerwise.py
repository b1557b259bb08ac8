"""Feedback alignment: a fixed random ``B`` replaces ``Wᵀ`` in the backward chain.

Lillicrap et al. (2016), "Random synaptic feedback weights support error backpropagation
for deep learning", Eq. (1): for ``y = x Wᵀ + b`` the error passed to the layer below is
``δ_x = δ_y B`` instead of ``δ_y W``, with ``B`` fixed and of W's shape; the weight
gradient ``δ_yᵀ x`` and everything else (activations, the loss) are exact.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from ..objectives import Objective
from .base import Method, StepResult
from .feedback_init import FEEDBACK_INITS, feedback_matrix

#: Modules with parameters that need no weight transport (elementwise or normalising):
#: they keep their exact backward.
PASS_THROUGH = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


class _LinearWithFeedback(torch.autograd.Function):
    """``F.linear`` whose backward sends ``grad_output @ feedback`` to the input."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor) -> Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, feedback = ctx.saved_tensors
        grad_x = grad_output @ feedback if ctx.needs_input_grad[0] else None
        grad_2d = grad_output.reshape(-1, grad_output.shape[-1])
        grad_weight = grad_2d.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_bias = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def _linear_forward(module: nn.Linear, feedback: Tensor, x: Tensor) -> Tensor:
    return _LinearWithFeedback.apply(x, module.weight, module.bias, feedback)


class FeedbackAlignment(Method):
    """FA on every ``nn.Linear`` of any model; other weight layers are refused by name."""

    name = "fa"

    def __init__(self, feedback_init: str = "kaiming_uniform", normalize: bool = False):
        FEEDBACK_INITS.get(feedback_init)
        self.feedback_init = feedback_init
        self.normalize = normalize
        self.layers: dict[str, nn.Linear] = {}
        self.feedback: dict[str, Tensor] = {}

    def attach(self, model: nn.Module, num_outputs: int, num_samples: int | None = None,
               task: str = "classification") -> None:
        self.layers, self.feedback = {}, {}
        for name, module in model.named_modules():
            own_params = list(module.parameters(recurse=False))
            if isinstance(module, nn.Linear):
                self.layers[name] = module
                out_features, in_features = module.weight.shape
                self.feedback[name] = feedback_matrix(
                    self.feedback_init, out_features, in_features, self.normalize
                ).to(module.weight.device)
            elif own_params and not isinstance(module, PASS_THROUGH):
                raise UnsupportedModelError(
                    f"fa cannot handle layer '{name}' ({type(module).__name__}); it supports Linear layers"
                )

    @contextmanager
    def _feedback_paths(self) -> Iterator[None]:
        for name, layer in self.layers.items():
            layer.forward = partial(_linear_forward, layer, self.feedback[name])
        try:
            yield
        finally:
            for layer in self.layers.values():
                del layer.forward

    def step(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor, objective: Objective) -> StepResult:
        with self._feedback_paths():
            output = model(x)
        loss = objective(output, t)
        loss.backward()
        return StepResult(output.detach(), loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"feedback": dict(self.feedback)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["feedback"]) != set(self.feedback):
            raise ValueError("checkpoint's feedback matrices do not match the model's Linear layers")
        self.feedback = dict(state["feedback"])
