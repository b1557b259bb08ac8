"""OIALR: orthogonality-informed adaptive low-rank training (Coquelin, Flügel, Weiel et al. 2024,
"Harnessing Orthogonality to Train Low-Rank Neural Networks").

After ``start`` optimizer steps at full rank, every eligible ``Linear`` layer ``W`` (out × in;
a ``Conv2d`` kernel as out × in·kh·kw; attention projections are Linear layers) is replaced
by ``U S Vᵀ`` from its SVD, with the orthonormal bases ``U`` (out × r) and ``V``
(in × r) fixed and only the dense core ``S`` (r × r) trained. Every ``every`` steps the core
is re-orthogonalised (``S = A Σ Bᵀ``; ``U ← U A``, ``V ← V B``, ``S ← Σ``: the product is
unchanged) and the singular values below ``cutoff`` × the largest are cut (at most
``max_cut`` of the current rank per update, never below rank 1).

The core reuses the ``Parameter`` object of the weight it replaces, so any optimizer keeps
working; its state follows every change: first moments and momentum are rotated exactly
(``m ← Aᵀ m B``, at the switch ``m ← Uᵀ m V``), Adam's second moments with the squared
rotation (``v ← (A∘A)ᵀ v (B∘B)``, exact where the moments are diagonal in the new basis),
and a cut keeps the rows and columns of the kept directions. The output layer stays full
rank by default; layers with ``min(out, fan_in) < min_size`` are skipped (too small to gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import BeyondBPError
from .schedule import ParametrizationSchedule
from .surgery import eligible_layers, replace_module, transform_state


class LowRank(nn.Module):
    """A layer whose weight (as a matrix ``out × fan_in``) is stored as ``U S Vᵀ``; only ``S`` (and
    the bias) trainable. Subclasses say how the factors act on the input."""

    def __init__(self, u: Tensor, core: nn.Parameter, v: Tensor, bias: nn.Parameter | None):
        super().__init__()
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        self.core = core
        self.bias = bias

    @property
    def rank(self) -> int:
        return self.core.shape[0]

    def weight(self) -> Tensor:
        """``U S Vᵀ`` as a matrix (``out × fan_in``)."""
        return self.u @ self.core @ self.v.T


class LowRankLinear(LowRank):
    """``y = x V Sᵀ Uᵀ + b``: a Linear layer stored as ``U S Vᵀ``."""

    def forward(self, x: Tensor) -> Tensor:
        out = ((x @ self.v) @ self.core.T) @ self.u.T
        return out + self.bias if self.bias is not None else out


class LowRankConv2d(LowRank):
    """A Conv2d whose kernel, reshaped to ``out × (in·kh·kw)``, is ``U S Vᵀ``: a convolution with the
    ``r`` kernels of ``Vᵀ`` (same stride, padding, dilation), then a 1×1 convolution with ``U S``."""

    def __init__(self, u: Tensor, core: nn.Parameter, v: Tensor, conv: nn.Conv2d):
        super().__init__(u, core, v, conv.bias)
        self.in_channels, self.kernel_size = conv.in_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: Tensor) -> Tensor:
        kernels = self.v.T.reshape(self.rank, self.in_channels, *self.kernel_size)
        mixed = F.conv2d(x, kernels, stride=self.stride, padding=self.padding, dilation=self.dilation)
        return F.conv2d(mixed, (self.u @ self.core)[:, :, None, None], self.bias)


@dataclass
class OIALR(ParametrizationSchedule):
    """The schedule and the surgery; :meth:`after_step` is called after every optimizer step."""

    name = "oialr"

    start: int = 1000
    every: int = 250
    cutoff: float = 0.15
    max_cut: float = 0.25
    min_size: int = 32
    keep_output_full: bool = True
    steps: int = 0

    def __post_init__(self):
        if self.start < 1 or self.every < 1 or not 0 <= self.cutoff < 1 or not 0 < self.max_cut <= 1:
            raise BeyondBPError(f"OIALR needs start >= 1, every >= 1, 0 <= cutoff < 1 and 0 < max_cut <= 1; got "
                                f"{self.start}, {self.every}, {self.cutoff}, {self.max_cut}")

    def eligible(self, model: nn.Module) -> list[str]:
        """Linear layers and Conv2d layers (``groups=1``, string padding excepted) with both sides of
        their weight matrix at least ``min_size``; the last Linear (the output layer) is kept."""
        plain_conv = lambda m: not isinstance(m, nn.Conv2d) or (m.groups == 1 and not isinstance(m.padding, str))
        return eligible_layers(model, (nn.Linear, nn.Conv2d), self.min_size, self.keep_output_full, plain_conv)

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Advance one step; at the switch or an update, change the layers and return what happened."""
        self.steps += 1
        if self.steps == self.start:
            self.convert(model, optimizer)
        elif self.steps > self.start and (self.steps - self.start) % self.every == 0:
            for layer in self.layers(model).values():
                self.reorthogonalize(layer, optimizer)
                self.cut(layer, optimizer)
        else:
            return None
        return {"step": self.steps, **self.report(model)}


    @staticmethod
    def layers(model: nn.Module) -> dict[str, LowRank]:
        return {name: m for name, m in model.named_modules() if isinstance(m, LowRank)}

    def convert(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Replace every eligible Linear by its full-rank ``U S Vᵀ`` (outputs unchanged)."""
        for name in self.eligible(model):
            layer = model.get_submodule(name)
            weight = layer.weight
            with torch.no_grad():
                u, s, vh = torch.linalg.svd(weight.reshape(len(weight), -1), full_matrices=False)
            u, v = u.contiguous(), vh.T.contiguous()
            if optimizer is not None:
                transform_state(optimizer, weight, lambda m: u.T @ m.reshape(len(u), -1) @ v,
                                 lambda q: (u * u).T @ q.reshape(len(u), -1) @ (v * v))
            weight.data = torch.diag(s)
            replace_module(model, name, LowRankLinear(u, weight, v, layer.bias) if isinstance(layer, nn.Linear)
                           else LowRankConv2d(u, weight, v, layer))

    @staticmethod
    def reorthogonalize(layer: LowRank, optimizer: torch.optim.Optimizer | None) -> None:
        """Fold the SVD of the core into the bases: ``U S Vᵀ`` unchanged, the core diagonal."""
        with torch.no_grad():
            a, sigma, bh = torch.linalg.svd(layer.core, full_matrices=False)
            b = bh.T
            layer.u = layer.u @ a
            layer.v = layer.v @ b
        if optimizer is not None:
            transform_state(optimizer, layer.core, lambda m: a.T @ m @ b, lambda q: (a * a).T @ q @ (b * b))
        layer.core.data = torch.diag(sigma)

    def cut(self, layer: LowRank, optimizer: torch.optim.Optimizer | None) -> int:
        """Drop the directions whose singular value is below ``cutoff`` × the largest; the new rank.

        Expects a diagonal core with sorted singular values (right after :meth:`reorthogonalize`).
        """
        sigma = layer.core.detach().diagonal()
        keep = int((sigma >= self.cutoff * sigma[0]).sum())
        keep = max(keep, layer.rank - int(self.max_cut * layer.rank), 1)
        if keep < layer.rank:
            with torch.no_grad():
                layer.u = layer.u[:, :keep].contiguous()
                layer.v = layer.v[:, :keep].contiguous()
            restrict = lambda m: m[:keep, :keep].contiguous()
            if optimizer is not None:
                transform_state(optimizer, layer.core, restrict, restrict)
            layer.core.data = restrict(layer.core.data)
        return keep

    def report(self, model: nn.Module) -> dict[str, Any]:
        """Per-layer ranks and the fraction of parameters still trainable, against the full-rank model."""
        lowrank = self.layers(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        full = trainable + sum(layer.u.shape[0] * layer.v.shape[0] - layer.core.numel() for layer in lowrank.values())
        return {"ranks": {name: layer.rank for name, layer in lowrank.items()}, "trainable_fraction": trainable / full}

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {"steps": self.steps, "shapes": {name: (layer.u.shape[0], layer.v.shape[0], layer.rank)
                                                for name, layer in self.layers(model).items()}}

    def prepare_to_load(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Give ``model`` the structure saved in ``state`` so that its checkpoint loads."""
        self.steps = state["steps"]
        if state["shapes"]:
            self.convert(model, None)
            for name, layer in self.layers(model).items():
                out_features, in_features, rank = state["shapes"][name]
                layer.u = layer.u.new_empty(out_features, rank)
                layer.v = layer.v.new_empty(in_features, rank)
                layer.core.data = layer.core.data.new_empty(rank, rank)
