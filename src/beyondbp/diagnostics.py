"""Alignment of any method's gradient with the exact one, measured without changing anything.

- Per parameter and per layer (a module's own parameters together): the cosine and the
  angle in degrees between the method's ``.grad`` and backprop's on the same batch, and
  the norm ratio ``|method| / |exact|``.
- Direct feedback (DFA, DRTP, F³): at each feedback point's output, the cosine between the
  injected signal ``s @ B_i`` and the true backpropagated ``∂L/∂h_i``, per sample, as
  mean ± std over the batch (Launay et al. 2019, "Principled Training of NNs with Direct
  Feedback Alignment").
- Layer-wise feedback (FA, sign symmetry, LDFA): the angle between each ``W`` and its
  feedback matrix (``B``, ``sign(W) ⊙ M`` or ``P Q``) and their norm ratio.

The model's weights and ``.grad``, the method's state (feedback matrices, F³'s buffer)
and the random number generators are the same before and after.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from .methods import Backprop, DirectFeedback, Method
from .methods.layerwise import LayerwiseFeedback
from .objectives import Objective


def _compare(estimate: Tensor, exact: Tensor) -> dict[str, float]:
    estimate, exact = estimate.flatten().double(), exact.flatten().double()
    norms = estimate.norm() * exact.norm()
    cosine = (estimate @ exact / norms).item() if norms > 0 else math.nan
    return {"cosine": cosine,
            "angle": math.degrees(math.acos(max(-1.0, min(1.0, cosine)))) if not math.isnan(cosine) else math.nan,
            "norm_ratio": (estimate.norm() / exact.norm()).item() if exact.norm() > 0 else math.nan}


def _gradients(model: nn.Module, method: Method, x, t, index, objective) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    method.step(model, x, t, index, objective)
    return {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for name, p in model.named_parameters() if p.requires_grad}


def _true_point_gradients(model: nn.Module, method: DirectFeedback, x: Tensor, t: Tensor,
                          objective: Objective) -> list[Tensor]:
    """``∂L/∂h_i`` at every feedback point's output, by backprop through the whole model."""
    outputs: list[Tensor] = []

    def keep(i: int, h: Tensor) -> Tensor:
        h.retain_grad()
        outputs.append(h)
        return h

    with method.points.hooked(keep):
        y = model(x)
    objective(y, t).backward()
    return [h.grad.detach() for h in outputs]


def _signal_alignment(model, method: DirectFeedback, x, t, index, objective) -> list[dict[str, Any]]:
    true = _true_point_gradients(model, method, x, t, objective)
    with torch.no_grad():
        y = model(x)
    s = method.signal.before_pass(t, index, method.buffer)
    if s is None:
        s = method.signal.after_pass(y, t, index, objective, method.buffer)
    rows = []
    for i, (g, b) in enumerate(zip(true, method.feedback)):
        cosines = torch.nn.functional.cosine_similarity(method.injected(s, b, g).flatten(1), g.flatten(1), dim=1)
        rows.append({"block": i, "point": method.points.names[i], "cosine_mean": cosines.mean().item(),
                     "cosine_std": cosines.std().item() if len(cosines) > 1 else 0.0})
    return rows


def alignment(model: nn.Module, method: Method, x: Tensor, t: Tensor, index: Tensor,
              objective: Objective) -> dict[str, Any]:
    """Alignment report of ``method`` with backprop on one batch (see the module docstring)."""
    t = objective.targets(t, method.num_outputs)
    grads_before = {name: (p.grad.clone() if p.grad is not None else None) for name, p in model.named_parameters()}
    method_state = copy.deepcopy(method.state_dict())
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    after_block = getattr(method, "after_block", None)
    was_training = model.training
    try:
        if after_block is not None:
            method.after_block = lambda params: None  # measuring must not step the optimizer
        model.train()
        estimate = _gradients(model, method, x, t, index, objective)
        method.load_state_dict(copy.deepcopy(method_state))  # undo the step's buffer writes
        exact_method = Backprop()
        exact_method.attach(model, method.num_outputs, method.num_samples, method.task, method.tokens)
        exact = _gradients(model, exact_method, x, t, index, objective)
        report: dict[str, Any] = {
            "parameters": {name: _compare(estimate[name], exact[name]) for name in exact},
            "layers": {},
        }
        for module_name, module in model.named_modules():
            own = [f"{module_name}.{n}" if module_name else n for n, p in module.named_parameters(recurse=False)
                   if p.requires_grad]
            if own:
                report["layers"][module_name] = _compare(torch.cat([estimate[n].flatten() for n in own]),
                                                         torch.cat([exact[n].flatten() for n in own]))
        if isinstance(method, DirectFeedback) and method.signal is not None and method.feedback:
            model.zero_grad(set_to_none=True)
            report["signals"] = _signal_alignment(model, method, x, t, index, objective)
        if isinstance(method, LayerwiseFeedback):
            report["feedback"] = {}
            for name, layer in method.layers.items():
                factors = method.factors(name, layer)
                feedback = factors[0] if len(factors) == 1 else torch.linalg.multi_dot(factors)
                report["feedback"][name] = {"angle": _compare(feedback, layer.weight)["angle"],
                                            "norm_ratio": (feedback.norm() / layer.weight.norm()).item()}
        return report
    finally:
        method.load_state_dict(method_state)
        if after_block is not None:
            method.after_block = after_block
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for name, p in model.named_parameters():
            p.grad = grads_before[name]
        model.train(was_training)
