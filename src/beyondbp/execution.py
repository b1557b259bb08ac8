"""The execution section of a run's configuration: where and on how many processes a run trains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .data.dataset import DataSplit
from .errors import BeyondBPError
from .options import Section, option, setting
from .pipeline.split import BALANCES

GROUP = "execution"
PLACEMENTS = ("auto", "device", "host")
#: ``data_placement auto`` moves the data onto a CUDA device when they take at most this part of its free memory.
DEVICE_SHARE = 0.25


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
    data_placement: str = option("auto", GROUP, "on a CUDA device, where the in-memory data live: device (moved "
                                                "once, each batch gathered there), host (each batch gathered in host "
                                                "memory and copied); auto: device when they take at most a quarter "
                                                "of its free memory", choices=PLACEMENTS)

    def check(self) -> None:
        super().check()
        if self.nproc < 1:
            raise BeyondBPError(f"nproc must be at least 1, got {self.nproc}")
        if self.stages < 1:
            raise BeyondBPError(f"stages must be at least 1, got {self.stages}")
        if self.stages > 1 and self.nproc > 1:
            raise BeyondBPError("stages cannot be combined with data parallelism (nproc)")
        resolve_device(self.device)

    def place(self, data: DataSplit, device: torch.device, free_bytes: int | None = None) -> DataSplit:
        """``data`` with its training and test sets on ``device`` where :attr:`data_placement` says so (the
        batches, and so the run, are the same either way: only the copies differ). ``free_bytes`` defaults to
        the device's free memory."""
        if device.type != "cuda" or self.data_placement == "host":
            return data
        size = sum(part.x.nbytes + part.t.nbytes for part in (data.train, data.test))
        if not self.on_device(size, torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes):
            return data
        return dataclasses.replace(data, train=data.train.to(device), test=data.test.to(device))

    def on_device(self, size: int, free: int) -> bool:
        """Whether data of ``size`` bytes go onto a CUDA device with ``free`` bytes of free memory."""
        return self.data_placement == "device" or (self.data_placement == "auto" and size <= DEVICE_SHARE * free)

    @property
    def processes(self) -> int:
        return max(self.nproc, self.stages)
