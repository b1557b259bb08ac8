"""Forward gradients: gradient estimates from forward-mode AD, without a backward pass.

For k tangents ``V`` (k × n) the directional derivatives ``d_j = ∇L · v_j`` come from
``torch.func.jvp`` batched over the tangents with ``torch.func.vmap``: the primal is
computed once, the k tangents in one batched pass. They are combined by
:func:`~beyondbp.methods.aggregation.aggregate` (single, mean, sum, projection).

- ``perturb="weights"`` (Baydin et al. 2022; Flügel et al. 2024): tangents on all trainable
  parameters of any ``nn.Module`` (through ``torch.func.functional_call``); no autograd
  graph is built anywhere. In data-parallel training the ranks exchange only the k
  directional derivatives (see :attr:`ForwardGradient.exchanges_estimates`).
- ``perturb="activities"`` (Ren et al. 2023, "Scaling Forward Gradient With Local Losses"):
  tangents on the outputs of the hidden blocks of a sequence-of-blocks model, which
  estimates ``∂L/∂h_i`` with far fewer dimensions per sample; each block then forms its
  weight gradient locally (a vector-Jacobian product inside the block, its input
  detached), and the output block gets its true local gradient.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from ..errors import BeyondBPError
from ..objectives import Objective
from .aggregation import AGGREGATIONS, aggregate
from .base import Method, StepResult
from .direct import blocks_of
from .tangents import TANGENT_SAMPLERS, sample_tangents

PERTURBATIONS = ("weights", "activities")


def directional_derivatives(f: Callable[[Tensor], tuple[Tensor, Any]], primal: Tensor,
                            tangents: Tensor, batched: bool = True) -> tuple[Tensor, Tensor, Any]:
    """``(f(primal), [∇f · v_j for each row v_j of tangents], aux)`` for ``f: R^n -> (R, aux)``.

    ``batched``: one forward-mode pass with the k tangents vmapped and the primal computed
    once. Otherwise k separate passes, each recomputing the primal: the reference that the
    batched pass must beat (``fg:...-loop``).
    """
    def along(tangent: Tensor):
        value, derivative, aux = jvp(f, (primal,), (tangent,), has_aux=True)
        return value, derivative, aux

    if batched:
        return vmap(along, out_dims=(None, 0, None))(tangents)
    passes = [along(tangent) for tangent in tangents]
    value, _, aux = passes[-1]
    return value, torch.stack([derivative for _, derivative, _ in passes]), aux


def forward_gradient(f: Callable[[Tensor], Tensor], x: Tensor, tangents: Tensor,
                     aggregation: str) -> tuple[Tensor, Tensor]:
    """``(f(x), estimate of ∇f(x))`` for a scalar function of a vector, from the given tangents."""
    value, derivatives, _ = directional_derivatives(lambda z: (f(z), ()), x, tangents)
    return value, aggregate(tangents, derivatives, aggregation)


def parse_variant(variant: str) -> dict[str, Any]:
    """Options from a variant such as ``"k4-projection-activities-rademacher"`` (any order)."""
    options: dict[str, Any] = {}
    for token in filter(None, variant.split("-")):
        if token[:1] == "k" and token[1:].isdigit():
            options["tangents"] = int(token[1:])
        elif token in AGGREGATIONS:
            options["aggregation"] = token
        elif token in PERTURBATIONS:
            options["perturb"] = token
        elif token in TANGENT_SAMPLERS:
            options["sampler"] = token
        elif token == "loop":
            options["batched"] = False
        elif token.startswith("angle") and token[5:].replace(".", "", 1).isdigit():
            options.update(sampler="angle", angle=float(token[5:]))
        else:
            raise BeyondBPError(
                f"unknown fg variant part '{token}'; use kN, an aggregation ({', '.join(AGGREGATIONS)}), "
                f"a perturbation ({', '.join(PERTURBATIONS)}), a sampler ({', '.join(TANGENT_SAMPLERS.names())}) "
                f"angleDEG or loop (k separate passes), joined by '-', e.g. fg:k4-projection-activities"
            )
    return options


class ForwardGradient(Method):
    """Forward-gradient descent with ``tangents`` tangents combined by ``aggregation``."""

    name = "fg"

    def __init__(self, tangents: int = 1, aggregation: str = "mean", sampler: str = "normal",
                 perturb: str = "weights", angle: float | None = None, batched: bool = True):
        if tangents < 1:
            raise BeyondBPError(f"fg needs at least one tangent, got {tangents}")
        if aggregation not in AGGREGATIONS:
            raise BeyondBPError(f"unknown aggregation '{aggregation}'; known aggregations: {', '.join(AGGREGATIONS)}")
        if aggregation == "single" and tangents != 1:
            raise BeyondBPError(f"aggregation 'single' takes one tangent, got {tangents}")
        if perturb not in PERTURBATIONS:
            raise BeyondBPError(f"unknown perturbation '{perturb}'; known perturbations: {', '.join(PERTURBATIONS)}")
        TANGENT_SAMPLERS.get(sampler)
        if sampler == "angle" and angle is None:
            raise BeyondBPError("the angle sampler needs an angle (--angle DEGREES)")
        self.tangents, self.aggregation, self.sampler = tangents, aggregation, sampler
        self.perturb, self.angle, self.batched = perturb, angle, batched

    @property
    def label(self) -> str:
        if self.sampler == "angle":
            sampler = f"-angle{self.angle:g}"
        else:
            sampler = "" if self.sampler == "normal" else f"-{self.sampler}"
        return f"fg:k{self.tangents}-{self.aggregation}-{self.perturb}{sampler}{'' if self.batched else '-loop'}"

    @property
    def exchanges_estimates(self) -> bool:
        """Data-parallel weight perturbation: every rank draws the same tangents (the generator is
        seeded alike everywhere and consumed alike), so the ranks exchange only their k directional
        derivatives and each rebuilds the same estimate, which equals the average of the ranks' full
        estimates because every aggregation is linear in the derivatives."""
        return self.parallel is not None and self.perturb == "weights"

    def attach(self, model: nn.Module, num_outputs: int, num_samples: int | None = None,
               task: str = "classification") -> None:
        if self.perturb == "activities":
            blocks_of(model, "fg with activity perturbation")

    def _tangents(self, n: int, device: torch.device) -> Tensor:
        return sample_tangents(self.sampler, self.tangents, n, device, self.angle)

    def step(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor, objective: Objective) -> StepResult:
        if self.perturb == "weights":
            return self._weight_step(model, x, t, objective)
        return self._activity_step(model, x, t, objective)

    def _weight_step(self, model: nn.Module, x: Tensor, t: Tensor, objective: Objective) -> StepResult:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        sizes = [p.numel() for _, p in named]

        def loss_of(theta: Tensor):
            pieces = {name: piece.view_as(p) for (name, p), piece in zip(named, theta.split(sizes))}
            output = functional_call(model, pieces, (x,))
            return objective(output, t), output

        with torch.no_grad():
            theta = torch.cat([p.detach().reshape(-1) for _, p in named])
            tangents = self._tangents(theta.numel(), theta.device)
            loss, derivatives, output = directional_derivatives(loss_of, theta, tangents, self.batched)
            if self.exchanges_estimates:
                derivatives, mean_loss = self.parallel.average(derivatives, loss.item(), len(x))
                loss = loss.new_tensor(mean_loss)
            estimate = aggregate(tangents, derivatives, self.aggregation)
            for (_, p), g in zip(named, estimate.split(sizes)):
                g = g.view_as(p)
                p.grad = g.clone() if p.grad is None else p.grad.add_(g)
        return StepResult(output, loss)

    def _activity_step(self, model: nn.Module, x: Tensor, t: Tensor, objective: Objective) -> StepResult:
        *hidden_blocks, head = blocks_of(model, "fg with activity perturbation")
        with torch.no_grad():
            inputs, h = [], x
            for block in hidden_blocks:
                inputs.append(h)
                h = block(h)
            shapes = [i.shape for i in inputs[1:]] + [h.shape]
            sizes = [s.numel() for s in shapes]

            def loss_of(perturbation: Tensor):
                z = x
                for block, eps, shape in zip(hidden_blocks, perturbation.split(sizes), shapes):
                    z = block(z) + eps.view(shape)
                y = head(z)
                return objective(y, t), y

            zeros = torch.zeros(sum(sizes), device=x.device)
            tangents = self._tangents(zeros.numel(), x.device)
            _, derivatives, _ = directional_derivatives(loss_of, zeros, tangents, self.batched)
            estimates = aggregate(tangents, derivatives, self.aggregation).split(sizes)
        for block, block_input, g, shape in zip(hidden_blocks, inputs, estimates, shapes):
            out = block(block_input)
            if out.requires_grad:
                out.backward(g.view(shape))
        y = head(h)
        loss = objective(y, t)
        loss.backward()
        return StepResult(y.detach(), loss.detach())
