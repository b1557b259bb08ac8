"""Forward gradients: gradient estimates from forward-mode AD, without a backward pass.

For k tangents ``V`` (k × n) the directional derivatives ``d_j = ∇L · v_j`` come from
``torch.func.jvp`` batched over the tangents with ``torch.func.vmap``: the primal is
computed once, the k tangents in one batched pass. They are combined by
:func:`~beyondbp.methods.aggregation.aggregate` (single, mean, sum, projection).

- ``perturb="weights"`` (Baydin et al. 2022; Flügel et al. 2024): tangents on all trainable
  parameters of any ``nn.Module`` (through ``torch.func.functional_call``); no autograd
  graph is built anywhere. In data-parallel training the ranks exchange only the k
  directional derivatives (see :attr:`ForwardGradient.exchanges_own_estimates`).
- ``perturb="activities"`` (Ren et al. 2023, "Scaling Forward Gradient With Local Losses"):
  tangents on the outputs of the feedback points of any model (:mod:`.points`; default:
  every block but the last of a sequence of blocks), which estimates ``∂L/∂h_i`` with far
  fewer dimensions per sample; each segment then forms its weight gradient locally (a
  vector-Jacobian product inside the segment, the previous point's output detached), and
  the part after the last point gets its true local gradient.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from ..errors import BeyondBPError
from ..objectives import Objective
from ..options import option, setting
from .aggregation import AGGREGATIONS, aggregate
from .base import Method, StepResult
from .forward_ready import forward_ready, record_batch_statistics
from .points import FeedbackPoints, PointOptions
from .tangent_stream import (
    STREAMED_SAMPLERS,
    TangentStream,
    accumulate_estimate,
    dense_blocks,
    local_weight_gradients,
    parameters_of,
    streamed_activity_derivatives,
    streamed_derivatives,
)
from .tangents import TANGENT_SAMPLERS, sample_tangents

PERTURBATIONS = ("weights", "activities")


def directional_derivatives(f: Callable[[Tensor], tuple[Tensor, Any]], primal: Tensor,
                            tangents: Tensor, batched: bool = True) -> tuple[Tensor, Tensor, Any]:
    """``(f(primal), [∇f · v_j for each row v_j of tangents], aux)`` for ``f: R^n -> (R, aux)``.

    ``batched``: one forward-mode pass with the k tangents vmapped and the primal computed
    once. Otherwise k separate passes, each recomputing the primal: the reference that the
    batched pass must beat (``fg:...-loop``). Random operations inside ``f`` (dropout) draw the
    same values for every tangent, so that all k derivatives are of one sampled function.
    """
    def along(tangent: Tensor):
        value, derivative, aux = jvp(f, (primal,), (tangent,), has_aux=True)
        return value, derivative, aux

    if batched:
        return vmap(along, out_dims=(None, 0, None), randomness="same")(tangents)
    accelerators = [primal.device] if primal.device.type != "cpu" else []  # the CPU's state is always kept
    passes = []
    for j, tangent in enumerate(tangents):
        last = j == len(tangents) - 1  # the last pass moves the random state on, as the batched pass does
        with contextlib.nullcontext() if last else torch.random.fork_rng(accelerators,
                                                                           device_type=primal.device.type):
            passes.append(along(tangent))
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


FG_GROUP = "forward gradient (fg)"


@dataclass
class ForwardGradientOptions(PointOptions):
    """Forward gradients' options: k tangents, how they are drawn and combined, what they perturb."""

    tangents: int = option(1, FG_GROUP, "tangents per step, k")
    aggregation: str = option("mean", FG_GROUP, "single, mean, sum or projection", choices=AGGREGATIONS)
    sampler: str = option("normal", FG_GROUP, "normal, rademacher, basis or angle")
    perturb: str = option("weights", FG_GROUP, "weights or activities", choices=PERTURBATIONS)
    angle: float | None = option(None, FG_GROUP, "pairwise angle of the tangents in degrees (sampler angle)")
    batched: bool = option(True, FG_GROUP, "all tangents in one batched pass (False: k separate passes, the "
                                           "variant part 'loop')", flag=False)

    def check(self) -> None:
        super().check()
        if self.tangents < 1:
            raise BeyondBPError(f"fg needs at least one tangent, got {self.tangents}")
        if self.aggregation == "single" and self.tangents != 1:
            raise BeyondBPError(f"aggregation 'single' takes one tangent, got {self.tangents}")
        TANGENT_SAMPLERS.get(self.sampler)
        if self.sampler == "angle" and self.angle is None:
            raise BeyondBPError(f"the angle sampler needs an angle: {setting('angle', 'DEGREES')}")
        if self.feedback_points and self.perturb != "activities":
            warnings.warn(f"fg perturbs the weights and ignores the feedback points (they apply to "
                          f"{setting('perturb', 'activities')})", UserWarning, stacklevel=2)


#: Forward-mode AD keeps its levels in process-wide state: two steps in threads of one process (a user's own
#: threads; a search runs parallel trials in processes) must not interleave theirs.
FORWARD_MODE = threading.Lock()


class ForwardGradient(Method):
    """Forward-gradient descent with ``tangents`` tangents combined by ``aggregation``
    (:class:`ForwardGradientOptions`, or its fields as keywords)."""

    name = "fg"
    supports_autocast = False  # its tangents and directional derivatives would meet in two precisions

    def __init__(self, options: ForwardGradientOptions | None = None, **settings: Any):
        options = options if options is not None else ForwardGradientOptions(**settings)
        self.tangents, self.aggregation, self.sampler = options.tangents, options.aggregation, options.sampler
        self.perturb, self.angle, self.batched = options.perturb, options.angle, options.batched
        self.feedback_points = options.points
        self.points: FeedbackPoints | None = None

    @property
    def label(self) -> str:
        if self.sampler == "angle":
            sampler = f"-angle{self.angle:g}"
        else:
            sampler = "" if self.sampler == "normal" else f"-{self.sampler}"
        return f"fg:k{self.tangents}-{self.aggregation}-{self.perturb}{sampler}{'' if self.batched else '-loop'}"

    @property
    def exchanges_own_estimates(self) -> bool:
        """Data-parallel weight perturbation: every rank draws the same tangents (the generator is
        seeded alike everywhere and consumed alike), so the ranks exchange only their k directional
        derivatives and each rebuilds the same estimate, which equals the average of the ranks' full
        estimates because every aggregation is linear in the derivatives."""
        return self.perturb == "weights"

    def prepare(self, model: nn.Module) -> None:
        if self.perturb == "activities":
            self.points = FeedbackPoints(model, self.feedback_points, self.label)

    def _tangents(self, n: int, device: torch.device) -> Tensor:
        return sample_tangents(self.sampler, self.tangents, n, device, self.angle)

    def compute(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor | None,
                objective: Objective) -> StepResult:
        with FORWARD_MODE, forward_ready(model, self.label):
            step = self._weight_step if self.perturb == "weights" else self._activity_step
            result = step(model, x, t, objective)
        record_batch_statistics(model, x)
        return result

    def _weight_step(self, model: nn.Module, x: Tensor, t: Tensor, objective: Objective) -> StepResult:
        blocks = dense_blocks(model) if self.sampler in STREAMED_SAMPLERS else None
        # the step's tangents from one seed of the global generator: data-parallel ranks draw the same ones
        stream = None if blocks is None else TangentStream(self.sampler, int(torch.randint(0, 2**62, (1,))),
                                                           x.device)
        if stream is not None and self.batched:
            return self._streamed_step(blocks, stream, x, t, objective)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        sizes = [p.numel() for _, p in named]

        def loss_of(theta: Tensor):
            pieces = {name: piece.view_as(p) for (name, p), piece in zip(named, theta.split(sizes))}
            output = functional_call(model, pieces, (x,))
            return objective(output, t), output

        with torch.no_grad():
            theta = torch.cat([p.detach().reshape(-1) for _, p in named])
            tangents = (stream.full([p.shape for _, p in named], self.tangents) if stream is not None
                        else self._tangents(theta.numel(), theta.device))
            loss, derivatives, output = directional_derivatives(loss_of, theta, tangents, self.batched)
            if self.exchanges_estimates:
                derivatives, mean_loss = self.parallel.average(derivatives, loss.item(), len(x))
                loss = loss.new_tensor(mean_loss)
            estimate = aggregate(tangents, derivatives, self.aggregation)
            for (_, p), g in zip(named, estimate.split(sizes)):
                g = g.view_as(p)
                p.grad = g.clone() if p.grad is None else p.grad.add_(g)
        return StepResult(output, loss)

    def _streamed_step(self, blocks, stream: TangentStream, x: Tensor, t: Tensor, objective: Objective) -> StepResult:
        """Dense blocks: tangents drawn per parameter from the step's seed, never stored (:mod:`.tangent_stream`)."""
        y, loss, derivatives = streamed_derivatives(blocks, x, t, objective, stream, self.tangents)
        if self.exchanges_estimates:
            derivatives, mean_loss = self.parallel.average(derivatives, loss.item(), len(x))
            loss = loss.new_tensor(mean_loss)
        params = parameters_of(blocks)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        accumulate_estimate([p.grad for p in params], stream, derivatives, self.aggregation)
        return StepResult(y, loss)

    def _streamed_activity_step(self, blocks, stream: TangentStream, x: Tensor, t: Tensor,
                                objective: Objective) -> StepResult:
        """Dense blocks: each block output's tangents drawn when the block is reached, never all at once;
        then each block's weight gradient from its estimated ``∂L/∂h_l`` (the output block: its true one)."""
        y, loss, derivatives, inputs, slopes = streamed_activity_derivatives(blocks, x, t, objective, stream,
                                                                            self.tangents)
        estimates = [torch.zeros_like(slope) for slope in slopes[:-1]]
        accumulate_estimate(estimates, stream, derivatives, self.aggregation)
        estimates.append(objective.output_gradient(y, t) / len(y))  # the output block's true ∂L/∂y
        local_weight_gradients(blocks, inputs, slopes, estimates)
        return StepResult(y, loss)

    def _activity_step(self, model: nn.Module, x: Tensor, t: Tensor, objective: Objective) -> StepResult:
        blocks = (dense_blocks(model) if self.sampler in STREAMED_SAMPLERS
                  and self.points.names == [name for name, _ in model.named_children()][:-1] else None)
        stream = None if blocks is None else TangentStream(self.sampler, int(torch.randint(0, 2**62, (1,))),
                                                           x.device)
        if stream is not None and self.batched:  # the default points of a dense network: drawn block by block
            return self._streamed_activity_step(blocks, stream, x, t, objective)
        points = self.points
        points.resolve(x)
        shapes: list[torch.Size] = []

        def record_shape(i: int, h: Tensor) -> Tensor:
            shapes.append(h.shape)
            return h

        with torch.no_grad(), points.hooked(record_shape):
            model(x)
        points.check_all_ran()
        sizes = [shape.numel() for shape in shapes]

        def loss_of(perturbation: Tensor):
            pieces = perturbation.split(sizes)
            with points.hooked(lambda i, h: h + pieces[i].view(shapes[i])):
                y = model(x)
            return objective(y, t), y

        with torch.no_grad():
            zeros = torch.zeros(sum(sizes), device=x.device)
            tangents = (stream.full(shapes, self.tangents) if stream is not None
                        else self._tangents(zeros.numel(), x.device))
            _, derivatives, _ = directional_derivatives(loss_of, zeros, tangents, self.batched)
            estimates = aggregate(tangents, derivatives, self.aggregation).split(sizes)
        outputs: list[Tensor] = []

        def cut(i: int, h: Tensor) -> Tensor:
            outputs.append(h)
            return h.detach()

        with points.hooked(cut):
            y = model(x)
        loss = objective(y, t)
        segments = [points.segment(i, h) for i, h in enumerate(outputs)]
        torch.autograd.backward(loss, inputs=points.segment(len(outputs), loss))
        for h, g, params in reversed(list(zip(outputs, estimates, segments))):
            if h.requires_grad:
                torch.autograd.backward(h, g.view(h.shape), inputs=params)
        return StepResult(y.detach(), loss.detach())
