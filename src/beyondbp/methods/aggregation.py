"""Combining k directional derivatives ``d = V ∇L`` (V: k × n, tangents as rows) into a gradient estimate.

- ``single``: ``d_1 v_1`` (k = 1; Baydin et al. 2022, the forward gradient).
- ``mean``: ``(1/k) Σ_j d_j v_j``; ``sum``: ``Σ_j d_j v_j``.
- ``projection``: ``Vᵀ (V Vᵀ)⁻¹ d``, the orthogonal projection of ∇L onto the tangents' span
  (Flügel et al. 2024, "Beyond Backpropagation: Optimization with Multi-Tangent Forward
  Gradients"): exact when k = n and independent of how non-orthogonal the tangents are.
  Computed through a QR decomposition ``Vᵀ = Q R``: ``Vᵀ (V Vᵀ)⁻¹ d = Q R⁻ᵀ d``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import BeyondBPError

AGGREGATIONS = ("single", "mean", "sum", "projection")


def project(tangents: Tensor, derivatives: Tensor) -> Tensor:
    """``Vᵀ (V Vᵀ)⁻¹ d``, with a clear error when the tangents do not span k dimensions."""
    k, n = tangents.shape
    if k > n:
        raise BeyondBPError(f"projection needs at most as many tangents as dimensions, got k={k} > n={n}")
    q, r = torch.linalg.qr(tangents.T)
    diagonal = r.diagonal().abs()
    if diagonal.min() <= 1e-5 * diagonal.max():
        raise BeyondBPError(f"the {k} tangents are linearly dependent (numerically); projection is undefined")
    z = torch.linalg.solve_triangular(r.T, derivatives[:, None], upper=False)
    return (q @ z)[:, 0]


def aggregate(tangents: Tensor, derivatives: Tensor, how: str) -> Tensor:
    """The gradient estimate in ``R^n`` from tangents ``V`` (k × n) and derivatives ``d`` (k)."""
    k = len(tangents)
    if how == "single":
        if k != 1:
            raise BeyondBPError(f"aggregation 'single' takes exactly one tangent, got {k}; use mean, sum or projection")
        return derivatives[0] * tangents[0]
    if how == "sum":
        return derivatives @ tangents
    if how == "mean":
        return derivatives @ tangents / k
    if how == "projection":
        return project(tangents, derivatives)
    raise BeyondBPError(f"unknown aggregation '{how}'; known aggregations: {', '.join(AGGREGATIONS)}")
