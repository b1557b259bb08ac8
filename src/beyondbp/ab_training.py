"""AB-training: communication-efficient distributed low-rank training (Coquelin, Flügel, Weiel et al. 2024,
"AB-Training: A Communication-Efficient Approach for Distributed Low-Rank Learning").

Data-parallel training (:mod:`beyondbp.distributed`) with a cycle of phases:

1. **warm-up**: ``start`` steps of ordinary data-parallel training at full rank;
2. **factor**: every eligible ``Linear`` weight ``W`` (out × in) becomes ``A B`` from its truncated
   SVD, ``A = U_r Σ_r^½`` (out × r), ``B = Σ_r^½ V_rᵀ`` (r × in), ``r = rank × min(out, in)``;
3. **independent groups** for ``sync_every`` steps: the even ranks train only ``A`` (``B`` fixed),
   the odd ranks only ``B``; the factors' gradients are averaged within each group only, so a
   rank sends ``out × r`` or ``r × in`` numbers per layer instead of ``out × in``. The layers
   that are not factored (biases, the output layer, small layers) stay data-parallel over all
   ranks;
4. **synchronise**: ``sync="products"`` (the default): ``W`` = the average over all ranks of
   their ``A B``; ``sync="factors"``: ``W = Ā B̄`` with ``Ā`` from the A group and ``B̄`` from
   the B group. Each group trained its factor against the other's *old* factor, so ``Ā B̄`` is
   a product neither group trained; on Fashion-MNIST (suite ``ab``) ``products`` loses 0.7–0.9
   points to plain data parallelism, ``factors`` 2–3;
5. **full rank** for ``full_steps`` steps (data parallel over all ranks), then back to 2.

The end of every epoch is also a synchronisation point, so every rank holds the same model
when rank 0 writes the checkpoint and ``--resume`` restarts all of them from it. The
factors reuse the weight's ``Parameter`` object (``B`` is added to its optimizer group while
it exists); the optimizer state of a weight restarts whenever its shape changes. Eligible
layers: as in OIALR, every ``Linear`` but the output layer with ``min(out, in) >= min_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .distributed import DataParallel
from .errors import BeyondBPError
from .options import setting
from .schedule import ParametrizationSchedule
from .surgery import eligible_layers, forget_state, replace_module

SYNC_MODES = ("factors", "products")
PHASES = ("warmup", "groups", "full")


class FactoredLinear(nn.Module):
    """``y = x Bᵀ Aᵀ + b``: a Linear layer held as ``A B``; ``linear`` is the layer it stands in for."""

    def __init__(self, linear: nn.Linear, a: nn.Parameter, b: nn.Parameter):
        super().__init__()
        self.a, self.b, self.bias = a, b, linear.bias
        self.__dict__["linear"] = linear  # not a submodule: its weight is ``a``'s Parameter object

    @property
    def rank(self) -> int:
        return self.b.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        out = (x @ self.b.T) @ self.a.T
        return out + self.bias if self.bias is not None else out


@dataclass
class ABTraining(ParametrizationSchedule):
    """The phase schedule, the factorisation and the group-wise gradient exchange."""

    name = "ab"

    parallel: DataParallel
    start: int = 500
    sync_every: int = 100
    full_steps: int = 10
    rank: float = 0.25
    sync: str = "products"
    min_size: int = 32
    steps: int = 0
    phase: str = "warmup"
    phase_steps: int = 0
    groups: list = field(default_factory=list, repr=False)

    @staticmethod
    def check(start: int, sync_every: int, full_steps: int, rank: float, sync: str) -> None:
        """Refuse settings that cannot work, with the setting named."""
        if start < 0 or sync_every < 1 or full_steps < 1 or not 0 < rank <= 1:
            raise BeyondBPError(f"AB-training needs ab-start >= 0, ab-sync-every >= 1, ab-full-steps >= 1 and "
                                f"0 < ab-rank <= 1; got {start}, {sync_every}, {full_steps}, {rank}")
        if sync not in SYNC_MODES:
            raise BeyondBPError(f"unknown AB synchronisation '{sync}'; known: {', '.join(SYNC_MODES)}")

    @classmethod
    def check_method(cls, method) -> None:
        """Layer-wise feedback is refused (as for OIALR), and fg: it exchanges its estimates over all ranks."""
        super().check_method(method)
        if method.exchanges_own_estimates:
            raise BeyondBPError(f"{setting('lowrank', 'ab')} does not compose with {method.label}: it exchanges its "
                                f"estimates over all ranks, AB-training trains the factors in separate groups")

    def __post_init__(self):
        if self.parallel is None or self.parallel.world < 2:
            raise BeyondBPError(f"{setting('lowrank', 'ab')} needs data-parallel training on at least 2 processes "
                                f"({setting('nproc', 2)})")
        self.check(self.start, self.sync_every, self.full_steps, self.rank, self.sync)
        # every rank creates every group, in the same order (torch.distributed requires it)
        world = self.parallel.world
        self.groups = [dist.new_group(list(range(parity, world, 2))) for parity in (0, 1)]

    @property
    def trains_a(self) -> bool:
        return self.parallel.rank % 2 == 0

    @property
    def group(self):
        return self.groups[self.parallel.rank % 2]

    def eligible(self, model: nn.Module) -> list[str]:
        return eligible_layers(model, (nn.Linear,), self.min_size)

    @staticmethod
    def layers(model: nn.Module) -> dict[str, FactoredLinear]:
        return {name: m for name, m in model.named_modules() if isinstance(m, FactoredLinear)}

    # -- the schedule -------------------------------------------------------------------------

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Advance one step; at a change of phase, change the layers and return what happened."""
        self.steps += 1
        self.phase_steps += 1
        if self.phase == "warmup" and self.steps >= self.start:
            self.factor(model, optimizer)
        elif self.phase == "groups" and self.phase_steps >= self.sync_every:
            self.synchronize(model, optimizer)
        elif self.phase == "full" and self.phase_steps >= self.full_steps:
            self.factor(model, optimizer)
        else:
            return None
        return {"step": self.steps, **self.report(model)}

    def end_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Synchronise at the end of an epoch, so that all ranks checkpoint the same model."""
        if self.phase != "groups":
            return None
        self.synchronize(model, optimizer)
        return {"step": self.steps, "epoch_end": True, **self.report(model)}

    def _enter(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    def factor(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Replace every eligible Linear by ``A B`` from the truncated SVD of its weight."""
        for name in self.eligible(model):
            linear = model.get_submodule(name)
            weight = linear.weight
            with torch.no_grad():
                u, s, vh = torch.linalg.svd(weight, full_matrices=False)
                r = max(1, round(self.rank * len(s)))
                root = s[:r].sqrt()
                a, b = u[:, :r] * root, root[:, None] * vh[:r]
            weight.data = a.contiguous()
            factor_b = nn.Parameter(b.contiguous())
            weight.requires_grad_(self.trains_a)
            factor_b.requires_grad_(not self.trains_a)
            if optimizer is not None:
                forget_state(optimizer, weight)
                group = next(g for g in optimizer.param_groups if any(p is weight for p in g["params"]))
                group["params"].append(factor_b)
            replace_module(model, name, FactoredLinear(linear, weight, factor_b))
        self._enter("groups")

    def synchronize(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Bring the groups' factors together into one full-rank weight per layer, the same on every rank."""
        for name, layer in self.layers(model).items():
            with torch.no_grad():
                if self.sync == "factors":  # A from the A group, B from the B group
                    a = layer.a if self.trains_a else torch.zeros_like(layer.a)
                    b = torch.zeros_like(layer.b) if self.trains_a else layer.b
                    flat = self.parallel.all_reduce(torch.cat([a.reshape(-1), b.reshape(-1)]))
                    sizes = [len(range(parity, self.parallel.world, 2)) for parity in (0, 1)]
                    a = flat[:a.numel()].view_as(a) / sizes[0]
                    b = flat[a.numel():].view_as(b) / sizes[1]
                    weight = a @ b
                else:
                    weight = self.parallel.all_reduce(layer.a @ layer.b) / self.parallel.world
            linear = layer.linear
            if optimizer is not None:
                forget_state(optimizer, layer.a, layer.b)
                for group in optimizer.param_groups:
                    group["params"] = [p for p in group["params"] if p is not layer.b]
            linear.weight.data = weight.contiguous()
            linear.weight.requires_grad_(True)
            replace_module(model, name, linear)
        self._enter("full")

    # -- the exchange -------------------------------------------------------------------------

    def average_gradients(self, model: nn.Module, loss: float, local_count: int) -> float:
        """Average the factors' gradients within this rank's group and every other gradient (and
        the loss) over all ranks; returns the mean loss."""
        factors = {id(p) for layer in self.layers(model).values() for p in (layer.a, layer.b)}
        params = [p for p in model.parameters() if p.grad is not None]
        grouped = [p for p in params if id(p) in factors]
        shared = [p for p in params if id(p) not in factors]
        loss = self._average(shared, loss, local_count, group=None)
        if grouped:
            self._average(grouped, 0.0, local_count, group=self.group)
        return loss

    def _average(self, params: list[nn.Parameter], loss: float, local_count: int, group) -> float:
        flat = torch.cat([p.grad.reshape(-1) for p in params]) if params else torch.zeros(0)
        averaged, loss = self.parallel.average(flat, loss, local_count, group=group)
        for p, g in zip(params, averaged.split([p.grad.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))
        return loss

    # -- reports and checkpoints --------------------------------------------------------------

    def report(self, model: nn.Module) -> dict[str, Any]:
        """Per-layer ranks (full width outside the group phase) and this rank's trainable fraction."""
        factored = self.layers(model)
        ranks = {name: layer.rank for name, layer in factored.items()}
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        full = trainable + sum(layer.linear.out_features * layer.linear.in_features
                               - (layer.a if layer.a.requires_grad else layer.b).numel()
                               for layer in factored.values())
        return {"ab_phase": self.phase, "ranks": ranks, "trainable_fraction": trainable / full}

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        if self.phase == "groups":
            raise BeyondBPError("internal: an AB-training checkpoint in the group phase would differ between ranks")
        return {"steps": self.steps, "phase": self.phase, "phase_steps": self.phase_steps}

    def prepare_to_load(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Checkpoints hold the full-rank model (epochs end synchronised): restore the schedule only."""
        self.steps, self.phase, self.phase_steps = state["steps"], state["phase"], state["phase_steps"]
