"""Learning-rate schedules, stepped once per optimizer step: the recipe's schedule is the optimizer's
business, whatever method filled ``p.grad``.

The factor multiplying every parameter group's learning rate at step ``n`` (of ``N`` in the run, ``W`` of them
warm-up, ``p = (n − W) / (N − W)`` the progress after it):

- warm-up (any schedule, ``warmup_epochs``): ``(n + 1) / W`` for ``n < W``, linear up to the full rate;
- ``constant``: 1;
- ``cosine``: ``(1 + cos πp) / 2`` (Loshchilov & Hutter 2017, without restarts), down to 0 at the end;
- ``step``: ``gamma^k``, ``k`` the number of ``step_at`` fractions of training already passed (He et al. 2016's
  CIFAR recipe: 0.1 at half and three quarters of training);
- ``onecycle``: Smith & Topin 2019 as ``torch.optim.lr_scheduler.OneCycleLR`` draws it (linear from lr/25 up to
  lr over the first 30% of the steps, or over the warm-up when one is given, then cosine down to lr/10⁴).

A checkpoint holds the scheduler's state, so a resumed run continues with the same factor at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import BeyondBPError
from .options import Section, option, setting

GROUP = "learning-rate schedule"
SCHEDULES = ("constant", "cosine", "step", "onecycle")
ONECYCLE_START = 0.3


@dataclass
class ScheduleOptions(Section):
    """The learning-rate schedule of a run (see the module docstring)."""

    lr_schedule: str = option("constant", GROUP, "constant, cosine, step or onecycle; per optimizer step",
                              choices=SCHEDULES)
    warmup_epochs: float = option(0.0, GROUP, "linear warm-up over this many epochs (fractions allowed)")
    step_at: tuple[float, ...] = option((0.5, 0.75), GROUP, "step: fractions of training where the rate is "
                                                            "multiplied by --gamma", metavar="FRACTIONS")
    gamma: float = option(0.1, GROUP, "step: the factor at each of --step-at")

    def check(self) -> None:
        super().check()
        if self.warmup_epochs < 0:
            raise BeyondBPError(f"{setting('warmup_epochs')} must be at least 0, got {self.warmup_epochs}")
        if any(not 0 < f < 1 for f in self.step_at) or list(self.step_at) != sorted(self.step_at):
            raise BeyondBPError(f"{setting('step_at')} takes increasing fractions of training between 0 and 1, "
                                f"got {','.join(map(str, self.step_at))}")
        if not self.gamma > 0:
            raise BeyondBPError(f"{setting('gamma')} must be positive, got {self.gamma}")

    @property
    def active(self) -> bool:
        return self.lr_schedule != "constant" or self.warmup_epochs > 0

    def factor(self, step: int, total: int, warmup: int) -> float:
        """The learning rate's factor at optimizer step ``step`` (0-based) of ``total``, ``warmup`` of them
        warm-up."""
        if self.lr_schedule == "onecycle":
            rise = warmup or max(1, round(ONECYCLE_START * total))
            if step < rise:
                return 1 / 25 + (1 - 1 / 25) * step / rise
            progress = min(1.0, (step - rise) / max(1, total - rise))
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * progress)) / 2
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if self.lr_schedule == "cosine":
            return (1 + math.cos(math.pi * progress)) / 2
        if self.lr_schedule == "step":
            return self.gamma ** sum(progress >= f for f in self.step_at)
        return 1.0

    def scheduler(self, optimizer: torch.optim.Optimizer, epochs: int,
                  steps_per_epoch: int | None) -> torch.optim.lr_scheduler.LambdaLR | None:
        """The optimizer's scheduler for ``epochs`` of ``steps_per_epoch`` (None for a constant rate)."""
        if not self.active:
            return None
        if not steps_per_epoch:
            raise BeyondBPError(f"{setting('lr_schedule', self.lr_schedule)} needs the number of batches per epoch: "
                                f"give data with a length (a Dataset, or a DataLoader over a sized dataset)")
        total, warmup = epochs * steps_per_epoch, round(self.warmup_epochs * steps_per_epoch)
        if warmup >= total:
            raise BeyondBPError(f"the warm-up ({self.warmup_epochs:g} epochs) is not shorter than training "
                                f"({epochs} epochs)")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step, total, warmup))
