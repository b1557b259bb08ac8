"""Forward gradients of dense networks with tangents drawn where they are used: no k × n tensor exists.

Weight perturbation needs, for k tangents ``V`` (k × n, n the number of parameters), the directional
derivatives ``d = V ∇L`` and then an estimate such as ``(1/k) Σ_j d_j v_j``. Drawing ``V`` whole costs k × n
floats (67 M for k = 16 on 4 blocks of width 1024) and most of the step's time. Here the tangent of
parameter ``p`` along direction ``j`` is drawn from its own generator, seeded by the step's seed, ``p`` and
``j`` (a counter-based scheme): it can be drawn when layer ``p`` is reached and drawn again, identically,
when the estimate is assembled, so it is never stored.

For a sequence of dense blocks ``h_l = φ_l(W_l h_{l-1} + b_l)``, one primal pass keeps each block's input
and ``φ_l'`` (what backprop keeps too); then each tangent ``j`` runs forward alone:
``ȧ_l = h_{l-1} V_{W_l,j}ᵀ + v_{b_l,j} + ḣ_{l-1} W_lᵀ``, ``ḣ_l = φ_l' ⊙ ȧ_l`` (the first block has no
``ḣ_0``), and ``d_j`` is the loss's forward-mode derivative along ``ẏ`` (no graph, no backward pass).
The arithmetic is that of forward-mode differentiation: one primal product per block and two per block
and tangent. Memory: backprop's activations plus one tangent's activations and one parameter's tangent
(drawn into a scratch buffer the size of the largest parameter).

The estimate, ``g_p = Σ_j c_j V_{p,j}``, is added into each parameter's gradient as its tangents are drawn
again one by one: ``c = d`` (sum, single), ``d / k`` (mean), or for the projection ``c = G⁻¹ d`` with the
k × k Gram matrix ``G = V Vᵀ`` accumulated parameter by parameter (``Vᵀ (V Vᵀ)⁻¹ d``, the same projection
as :func:`~beyondbp.methods.aggregation.project`; it holds the k tangents of one parameter at a time). For
the same draws, the estimate equals :func:`~beyondbp.methods.forward_gradient.forward_gradient`'s (a test
compares them). Rademacher tangents keep the random words of tangent 0 (one bit per entry, 1/32 of its
floats) so that its signs are not drawn twice; Gaussian tangents are always drawn again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jvp

from ..errors import BeyondBPError
from ..objectives import Objective

#: Samplers whose entries are independent, so that each parameter's tangent can be drawn on its own.
STREAMED_SAMPLERS = ("normal", "rademacher")
_ACTIVATIONS = (nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.Identity)
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def mixed_seed(step: int, parameter: int, tangent: int) -> int:
    """A generator seed for one (step, parameter, tangent): the three counters mixed (splitmix64-style)."""
    z = (step * _MIX[0] + parameter * _MIX[1] + tangent * _MIX[2]) % 2**64
    z = ((z ^ (z >> 30)) * _MIX[1]) % 2**64
    z = ((z ^ (z >> 27)) * _MIX[2]) % 2**64
    return (z ^ (z >> 31)) % 2**63


class TangentStream:
    """The tangents of one step: ``draw(p, j, shape)`` is parameter ``p``'s entry of tangent ``j``, the same
    every time it is drawn."""

    def __init__(self, sampler: str, seed: int, device: torch.device):
        if sampler not in STREAMED_SAMPLERS:
            raise BeyondBPError(f"streamed tangents need independent entries ({', '.join(STREAMED_SAMPLERS)}); "
                                f"got '{sampler}'")
        self.sampler, self.seed, self.device = sampler, seed, device
        self.generator = torch.Generator(device=device)
        #: Rademacher: row ``b`` holds the eight signs of byte ``b``, bit i to entry i (2 bit - 1).
        self.signs = ((torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1) * 2.0 - 1
        self.scratch = torch.empty(0, device=device)
        #: Rademacher: the random words of tangent 0 of each parameter drawn so far (one bit per entry).
        self.kept_words: dict[int, Tensor] = {}

    def draw(self, parameter: int, tangent: int, shape: Sequence[int], scratch: bool = False,
             out: Tensor | None = None) -> Tensor:
        """The tangent's entries for ``parameter``, in a new tensor, in ``out``, or with ``scratch`` in the
        stream's one reusable buffer (valid until the next scratch draw)."""
        count = math.prod(shape)
        if scratch:
            if self.scratch.numel() < count:
                self.scratch = torch.empty(count, device=self.device)
            out = self.scratch[:count]
        out = (torch.empty(*shape, device=self.device) if out is None else out).view(*shape)
        if self.sampler == "normal":
            return out.normal_(generator=self._seeded(parameter, tangent))
        words = self.kept_words.get(parameter) if tangent == 0 else None
        if words is None:  # 64 signs from each random 64-bit word (its whole range: every bit fair)
            words = torch.empty((count + 63) // 64, dtype=torch.int64, device=self.device).random_(
                -2**63, 2**63 - 1, generator=self._seeded(parameter, tangent))
            if tangent == 0:
                self.kept_words[parameter] = words
        octets = words.view(torch.uint8)[:(count + 7) // 8].long()
        if count % 8 == 0:  # one gather from the 256 x 8 table writes the signs in place
            torch.index_select(self.signs, 0, octets, out=out.view(-1, 8))
            return out
        return out.view(-1).copy_(self.signs[octets].view(-1)[:count]).view(*shape)

    def _seeded(self, parameter: int, tangent: int) -> torch.Generator:
        return self.generator.manual_seed(mixed_seed(self.seed, parameter, tangent))

    def full(self, shapes: Sequence[Sequence[int]], k: int) -> Tensor:
        """Every tangent whole (k × n, parameters in order): what the streamed estimate never builds; for tests
        and for comparing with the estimate of whole tangents."""
        return torch.stack([torch.cat([self.draw(p, j, s).reshape(-1) for p, s in enumerate(shapes)])
                            for j in range(k)])


def dense_blocks(model: nn.Module) -> list[tuple[bool, nn.Linear, nn.Module]] | None:
    """``(flattens, linear, activation)`` per block of an ``nn.Sequential`` whose every child is
    ``[Flatten,] Linear, activation`` (tanh, sigmoid, ReLU, leaky ReLU or none) with every parameter
    trainable and no hooks; None for any other model."""
    if not isinstance(model, nn.Sequential) or len(model) == 0:
        return None
    blocks = []
    for child in model:
        parts = list(child) if isinstance(child, nn.Sequential) else [child]
        flattens = bool(parts) and isinstance(parts[0], nn.Flatten) and parts[0].start_dim == 1
        parts = parts[1:] if flattens else parts
        if len(parts) == 1:
            parts.append(nn.Identity())
        if (len(parts) != 2 or type(parts[0]) is not nn.Linear or type(parts[1]) not in _ACTIVATIONS
                or not all(p.requires_grad for p in parts[0].parameters())
                or any(m._forward_hooks or m._forward_pre_hooks for m in child.modules())):
            return None
        blocks.append((flattens, parts[0], parts[1]))
    return blocks


def _slope(activation: nn.Module, h: Tensor) -> Tensor:
    """``φ'`` from the output ``h = φ(a)``."""
    if isinstance(activation, nn.Tanh):
        return 1 - h * h
    if isinstance(activation, nn.Sigmoid):
        return h * (1 - h)
    if isinstance(activation, nn.Identity):
        return torch.ones_like(h)
    slope = activation.negative_slope if isinstance(activation, nn.LeakyReLU) else 0.0
    return torch.where(h > 0, 1.0, slope).to(h.dtype)


def parameters_of(blocks: list[tuple[bool, nn.Linear, nn.Module]]) -> list[nn.Parameter]:
    """The blocks' parameters in the model's order: each block's weight, then its bias."""
    return [p for _, linear, _ in blocks for p in (linear.weight, linear.bias) if p is not None]


@torch.no_grad()
def streamed_derivatives(blocks: list[tuple[bool, nn.Linear, nn.Module]], x: Tensor, t: Tensor,
                         objective: Objective, stream: TangentStream, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, loss, d)``: the output, the loss and the k directional derivatives ``d_j = ∇L · v_j``."""
    inputs, slopes, y = _primal(blocks, x)
    loss = objective(y, t)
    derivatives = torch.empty(k, device=x.device)
    for j in range(k):
        tangent, index = None, 0
        for (flattens, linear, _), h_in, slope in zip(blocks, inputs, slopes):
            a_dot = h_in @ stream.draw(index, j, linear.weight.shape, scratch=True).T
            index += 1
            if linear.bias is not None:
                a_dot += stream.draw(index, j, linear.bias.shape, scratch=True)
                index += 1
            if tangent is not None:
                a_dot.addmm_(tangent.flatten(1) if flattens else tangent, linear.weight.T)
            tangent = a_dot.mul_(slope)
        derivatives[j] = jvp(lambda output: objective(output, t), (y,), (tangent,))[1]  # the loss's own jvp
    return y, loss, derivatives


@torch.no_grad()
def accumulate_estimate(targets: Sequence[Tensor], stream: TangentStream, derivatives: Tensor,
                        aggregation: str) -> None:
    """Add ``g_p = Σ_j c_j V_{p,j}`` into ``targets[p]`` for every perturbed tensor ``p`` (parameters' gradients,
    or block outputs' estimates; see the module docstring), drawing each tangent again into scratch."""
    k = len(derivatives)
    if aggregation == "projection":
        n = sum(target.numel() for target in targets)
        if k > n:
            raise BeyondBPError(f"projection needs at most as many tangents as dimensions, got k={k} > n={n}")
        gram = torch.zeros(k, k, device=derivatives.device)
        rows = torch.empty(k, max(target.numel() for target in targets), device=derivatives.device)
        for index, target in enumerate(targets):
            block = rows[:, :target.numel()]
            for j in range(k):
                stream.draw(index, j, target.shape, out=block[j])
            gram.addmm_(block, block.T)
        diagonal = torch.linalg.eigvalsh(gram)
        if diagonal.min() <= 1e-10 * diagonal.max():
            raise BeyondBPError(f"the {k} tangents are linearly dependent (numerically); projection is undefined")
        coefficients = torch.linalg.solve(gram, derivatives)
    else:
        coefficients = derivatives / k if aggregation == "mean" else derivatives
    for index, target in enumerate(targets):
        for j in range(k):
            target.addcmul_(stream.draw(index, j, target.shape, scratch=True), coefficients[j])


def _primal(blocks, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Each block's input and ``φ'``, and the output."""
    inputs, slopes, h = [], [], x
    for flattens, linear, activation in blocks:
        h = h.flatten(1) if flattens else h
        inputs.append(h)
        h = activation(F.linear(h, linear.weight, linear.bias))
        slopes.append(_slope(activation, h))
    return inputs, slopes, h


@torch.no_grad()
def streamed_activity_derivatives(blocks: list[tuple[bool, nn.Linear, nn.Module]], x: Tensor, t: Tensor,
                                  objective: Objective, stream: TangentStream,
                                  k: int) -> tuple[Tensor, Tensor, Tensor, list[Tensor], list[Tensor]]:
    """Activity perturbation (Ren et al. 2023): tangent ``j`` of hidden block ``l``'s output, ``u_{l,j}``
    (batch × width, drawn when block ``l`` is reached, index ``l``), enters after the block:
    ``ḣ_l = φ_l' ⊙ (ḣ_{l-1} W_lᵀ) + u_{l,j}``; the output block adds no tangent. Returns ``(y, loss, d,
    inputs, slopes)``, the last two for the blocks' local weight gradients."""
    inputs, slopes, y = _primal(blocks, x)
    loss = objective(y, t)
    derivatives = torch.empty(k, device=x.device)
    hidden = len(blocks) - 1
    for j in range(k):
        tangent = None
        for index, ((flattens, linear, _), slope) in enumerate(zip(blocks, slopes)):
            a_dot = None if tangent is None else (tangent.flatten(1) if flattens else tangent) @ linear.weight.T
            if index == hidden:
                tangent = a_dot.mul_(slope)
                break
            u = stream.draw(index, j, slope.shape, scratch=True)
            tangent = u.clone() if a_dot is None else a_dot.mul_(slope).add_(u)
        derivatives[j] = jvp(lambda output: objective(output, t), (y,), (tangent,))[1]
    return y, loss, derivatives, inputs, slopes


@torch.no_grad()
def local_weight_gradients(blocks: list[tuple[bool, nn.Linear, nn.Module]], inputs: list[Tensor],
                           slopes: list[Tensor], output_gradients: list[Tensor]) -> None:
    """Add each block's weight gradient for ``∂L/∂h_l`` (its output) into ``.grad``:
    ``δ = ∂L/∂h_l ⊙ φ_l'``, ``∂L/∂W_l = δᵀ h_{l-1}``, ``∂L/∂b_l = Σ δ``."""
    for (_, linear, _), h_in, slope, g in zip(blocks, inputs, slopes, output_gradients):
        delta = g * slope
        weight = linear.weight
        if weight.grad is None:
            weight.grad = delta.T @ h_in
        else:
            weight.grad.addmm_(delta.T, h_in)  # into the gradient: no weight-sized temporary
        if linear.bias is not None:
            linear.bias.grad = delta.sum(0) if linear.bias.grad is None else linear.bias.grad.add_(delta.sum(0))
