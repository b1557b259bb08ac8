"""The execution section of a run's configuration: where and on how many processes a run trains."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BeyondBPError
from .options import Section, option, setting
from .pipeline.split import BALANCES

GROUP = "execution"


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA where available), ``cpu``, ``cuda`` or ``cuda:N``; CUDA asked for but missing is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BeyondBPError(f"device '{name}' requested but CUDA is not available; use {setting('device', 'cpu')}")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BeyondBPError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


@dataclass
class ExecutionOptions(Section):
    """One process, data-parallel ranks (``nproc``) or layer-parallel stages (``stages``), on ``device``."""

    device: str = option("auto", GROUP, "auto (cuda if available), cpu, cuda, cuda:N")
    nproc: int = option(1, GROUP, "data-parallel training on N processes of this machine (launches torchrun); see "
                                  "README", metavar="N")
    stages: int = option(1, GROUP, "layer-parallel: cut the model's blocks into N stages, one process each, updated "
                                   "as the forward pass reaches them (f3, drtp, shallow; launches torchrun); see "
                                   "README", metavar="N")
    balance: str = option("parameters", GROUP, "stages: cut by parameter count or by measured time per block",
                          choices=BALANCES)

    def check(self) -> None:
        super().check()
        if self.nproc < 1:
            raise BeyondBPError(f"nproc must be at least 1, got {self.nproc}")
        if self.stages < 1:
            raise BeyondBPError(f"stages must be at least 1, got {self.stages}")
        if self.stages > 1 and self.nproc > 1:
            raise BeyondBPError("stages cannot be combined with data parallelism (nproc)")
        resolve_device(self.device)

    @property
    def processes(self) -> int:
        return max(self.nproc, self.stages)
