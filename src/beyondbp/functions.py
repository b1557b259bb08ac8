"""Closed-form test functions and gradient descent on them with forward gradients.

The test functions of Flügel et al. (2024), each with its known minimum:

- sphere ``Σ x_i²``: 0 at the origin;
- Rosenbrock ``Σ_{i<n} 100 (x_{i+1} - x_i²)² + (1 - x_i)²``: 0 at ``(1, ..., 1)``;
- Styblinski–Tang ``½ Σ (x_i⁴ - 16 x_i² + 5 x_i)``: ``-39.16599 n`` at ``x_i ≈ -2.903534``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import BeyondBPError
from .methods.forward_gradient import forward_gradient
from .methods.tangents import sample_tangents
from .registry import Registry


@dataclass(frozen=True)
class TestFunction:
    """A scalar function of a vector with its minimum value per dimension and a start point."""

    f: Callable[[Tensor], Tensor]
    minimum_per_dim: float  # the minimum is minimum_per_dim * n (Rosenbrock: 0 for any n)
    start: Callable[[int, torch.Generator], Tensor]

    def minimum(self, n: int) -> float:
        return self.minimum_per_dim * n


FUNCTIONS: Registry[TestFunction] = Registry("function")


def _uniform_start(n: int, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1


FUNCTIONS.register("sphere", "sum of squares; minimum 0 at the origin")(
    TestFunction(lambda x: (x ** 2).sum(), 0.0, _uniform_start))
FUNCTIONS.register("rosenbrock", "Rosenbrock's valley; minimum 0 at (1, ..., 1); start at the origin")(
    TestFunction(lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(), 0.0,
                 lambda n, g: torch.zeros(n, dtype=torch.float64)))
FUNCTIONS.register("styblinski-tang", "0.5 sum(x^4 - 16x^2 + 5x); minimum -39.16599 n at x_i = -2.903534")(
    TestFunction(lambda x: 0.5 * (x ** 4 - 16 * x ** 2 + 5 * x).sum(), -39.16599, _uniform_start))


@dataclass
class OptimizeResult:
    final: float
    minimum: float
    exact_final: float  # the same descent with the exact gradient


def optimize(function: str, dim: int, tangents: int, aggregation: str, steps: int, lr: float,
             sampler: str = "normal", angle: float | None = None, seed: int = 0) -> OptimizeResult:
    """Gradient descent from the function's start point with forward-gradient estimates, and with the
    exact gradient for reference (float64, same steps and learning rate)."""
    test = FUNCTIONS.get(function)
    if dim < 2 or steps < 1 or not lr > 0:
        raise BeyondBPError(f"need dim >= 2, steps >= 1 and lr > 0, got {dim}, {steps}, {lr}")
    torch.manual_seed(seed)
    start = test.start(dim, torch.Generator().manual_seed(seed))
    x, exact = start.clone(), start.clone()
    for _ in range(steps):
        v = sample_tangents(sampler, tangents, dim, angle=angle).double()
        _, estimate = forward_gradient(test.f, x, v, aggregation)
        x = x - lr * estimate
        exact = exact - lr * torch.func.grad(test.f)(exact)
    final, exact_final = test.f(x).item(), test.f(exact).item()
    if not torch.isfinite(torch.tensor([final, exact_final])).all():
        raise BeyondBPError(f"gradient descent diverged on {function} (lr {lr:g}); try a smaller learning rate")
    return OptimizeResult(final, test.minimum(dim), exact_final)
