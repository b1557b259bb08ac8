"""The energy a run uses: measured where the machine exposes counters, estimated otherwise, always labelled.

An :class:`EnergyMeter` accumulates joules from the moment it is made; :meth:`EnergyMeter.joules` reads the
total so far and :attr:`EnergyMeter.source` says how it was obtained:

- **RAPL** (Linux powercap, ``/sys/class/powercap/intel-rapl:*``; AMD processors expose the same files): the
  cumulative µJ counters of every CPU package and its DRAM domain (the ``psys`` platform domain is left out:
  it overlaps the packages). The counters wrap at ``max_energy_range_uj``; every read adds the difference
  modulo that range, so reads must come more often than one wrap (minutes to hours). RAPL counts the whole
  machine, every process on it. The files are often readable by root only; then the estimate is used.
- **NVML** (NVIDIA's ``nvidia-ml-py``): the total energy counter (mJ) of the GPU that the run uses, when it
  uses one and the package is installed.
- **estimate**, where RAPL is not readable: ``watts_per_core`` × the CPU seconds of this process and its
  finished children (user + system), i.e. rated power per core times utilisation. The default, 10 W per
  busy core, lies between a 64-core 280 W server processor (4.4 W) and a 4-core 65 W desktop one (16 W);
  set it from your processor's rated power divided by its cores. Idle power and DRAM are not counted.

perun (Helmholtz AI) and codecarbon read the same counters; they monitor a whole program from a sampling
process and write their own files, while a training loop needs a reading at every epoch boundary inside
its own process, which this small reader gives.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

RAPL_ROOT = Path("/sys/class/powercap")
DEFAULT_WATTS_PER_CORE = 10.0


@dataclass
class _Counter:
    """One cumulative RAPL counter and what has been added from it so far."""

    energy: Path
    wrap: int
    last: int
    total_uj: int = 0

    def read(self) -> int:
        now = int(self.energy.read_text())
        self.total_uj += (now - self.last) % self.wrap if self.wrap else max(now - self.last, 0)
        self.last = now
        return self.total_uj


def rapl_counters(root: Path = RAPL_ROOT) -> list[_Counter]:
    """Readable package and DRAM counters under ``root`` (empty if none)."""
    counters = []
    zones = sorted(root.glob("intel-rapl:*")) if root.is_dir() else []
    for zone in zones:
        try:
            name = (zone / "name").read_text().strip()
            nested = zone.name.count(":") == 2
            if name == "psys" or (nested and name != "dram"):
                continue  # the platform domain overlaps the packages; core/uncore are inside the package
            wrap_file = zone / "max_energy_range_uj"
            wrap = int(wrap_file.read_text()) if wrap_file.is_file() else 0
            counters.append(_Counter(zone / "energy_uj", wrap, int((zone / "energy_uj").read_text())))
        except (OSError, ValueError):
            return []  # one unreadable counter makes the sum wrong: estimate instead
    return counters


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads; nanosecond clock) and of its finished
    children (clock ticks)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


class _GPU:
    """NVML's total energy counter (mJ) of one GPU."""

    def __init__(self, index: int):
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        self.start = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def joules(self) -> float:
        return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self.start) / 1000.0


class EnergyMeter:
    """Joules used since construction by the CPU side (RAPL or the estimate) and the run's GPU (NVML)."""

    def __init__(self, device: torch.device | str = "cpu", watts_per_core: float = DEFAULT_WATTS_PER_CORE,
                 rapl_root: Path = RAPL_ROOT):
        if not watts_per_core > 0:
            raise ValueError(f"watts_per_core must be positive, got {watts_per_core}")
        self.watts_per_core = watts_per_core
        self.counters = rapl_counters(rapl_root)
        self.cpu_start = cpu_seconds()
        cpu = ("RAPL (CPU packages and DRAM, whole machine)" if self.counters else
               f"estimate ({watts_per_core:g} W per busy core x this process's CPU time; RAPL not readable)")
        self.gpu, gpu = None, ""
        device = torch.device(device)
        if device.type == "cuda":
            try:
                self.gpu = _GPU(device.index if device.index is not None else torch.cuda.current_device())
                gpu = " + NVML (the run's GPU)"
            except Exception as error:  # no pynvml, no NVML library, or a GPU without the counter
                gpu = f" (GPU not measured: {type(error).__name__})"
        self.source = cpu + gpu

    def joules(self) -> float:
        cpu = (sum(c.read() for c in self.counters) / 1e6 if self.counters
               else self.watts_per_core * (cpu_seconds() - self.cpu_start))
        return cpu + (self.gpu.joules() if self.gpu is not None else 0.0)


def kwh(joules: float) -> float:
    return joules / 3.6e6
