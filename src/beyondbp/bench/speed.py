"""Step time and step memory of each method against backprop, measured in one run.

Time: the median wall time of a whole training step (``zero_grad``, ``method.step``,
``optimizer.step``) over repeated steps after a warm-up, with the methods interleaved
step by step so that drift of the machine (frequency, other load) hits all of them alike.

Memory: the peak of memory allocated during ``method.step`` beyond what existed before
it (:func:`beyondbp.memory.peak_bytes`): parameters, optimizer state and gradients are
allocated beforehand, so they are not counted (the step accumulates into them). That is
the memory of activations, the autograd graph and temporaries.

Energy: the mean energy of the timed steps (:class:`~beyondbp.energy.EnergyMeter` read around each one),
labelled with its source.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ..energy import EnergyMeter
from ..execution import resolve_device
from ..memory import peak_bytes
from ..methods import make_method
from ..models import build_model
from ..objectives import make_objective
from ..tables import write_rows
from .machine import machine_description

SPEED_COLUMNS = ("method", "step_time_ms", "step_time_ratio", "step_memory_mb", "step_memory_ratio",
                 "step_energy_mj", "step_energy_ratio", "energy_source")
NUM_OUTPUTS = 10


class Setup:
    """One method's model, optimizer and fixed batch."""

    def __init__(self, spec: str, model_name: str, depth: int, width: int, batch_size: int, device: torch.device):
        torch.manual_seed(0)
        self.objective = make_objective("bce", "classification")
        self.model = build_model(model_name, (width,), NUM_OUTPUTS, self.objective.output_activation(),
                                 hidden=(width,) * depth, activation="tanh").to(device)
        self.method = make_method(spec)
        self.method.attach(self.model, num_outputs=NUM_OUTPUTS, num_samples=batch_size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-5)
        self.x = torch.randn(batch_size, width, device=device)
        self.t = torch.nn.functional.one_hot(torch.randint(NUM_OUTPUTS, (batch_size,)), NUM_OUTPUTS).float().to(device)
        self.index = torch.arange(batch_size, device=device)
        self.device = device

    def method_step(self) -> None:
        self.method.step(self.model, self.x, self.t, self.index, self.objective)

    def train_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.method_step()
        self.optimizer.step()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed_step(self) -> float:
        self.synchronize()
        start = time.perf_counter()
        self.train_step()
        self.synchronize()
        return time.perf_counter() - start

    def step_memory(self) -> int:
        """Peak bytes allocated by one ``method.step`` beyond parameters, gradients and optimizer state."""
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        return peak_bytes(self.method_step, self.device)[1]


def measure_speed(methods: Sequence[str], depth: int, width: int, batch_size: int, steps: int = 30,
                  warmup: int = 3, model: str = "mlp", device: str = "auto") -> list[dict[str, Any]]:
    """One row per method: median step time, peak step memory, and both as ratios to the first method."""
    target = resolve_device(device)
    setups = {spec: Setup(spec, model, depth, width, batch_size, target) for spec in methods}
    for _ in range(warmup):
        for setup in setups.values():
            setup.train_step()
    times: dict[str, list[float]] = {spec: [] for spec in methods}
    joules = dict.fromkeys(methods, 0.0)
    meter = EnergyMeter(target)
    for _ in range(steps):
        for spec, setup in setups.items():
            before = meter.joules()
            times[spec].append(setup.timed_step())
            joules[spec] += meter.joules() - before
    memory = {spec: setup.step_memory() for spec, setup in setups.items()}
    reference = methods[0]
    ref_time, ref_memory = statistics.median(times[reference]), memory[reference]
    return [{"method": setups[spec].method.label,
             "step_time_ms": round(1000 * statistics.median(times[spec]), 2),
             "step_time_ratio": round(statistics.median(times[spec]) / ref_time, 3),
             "step_memory_mb": round(memory[spec] / 2 ** 20, 1),
             "step_memory_ratio": round(memory[spec] / ref_memory, 3) if ref_memory else float("nan"),
             "step_energy_mj": round(1000 * joules[spec] / steps, 2),
             "step_energy_ratio": round(joules[spec] / joules[reference], 3) if joules[reference] else float("nan"),
             "energy_source": meter.source}
            for spec in methods]


def run_speed(methods: Sequence[str], depth: int, width: int, batch_size: int, out_dir: Path,
              steps: int = 30, warmup: int = 3, model: str = "mlp", device: str = "auto") -> list[dict[str, Any]]:
    """Measure and write ``out_dir/speed.csv`` and ``out_dir/meta.json`` (settings, machine, date)."""

    rows = measure_speed(methods, depth, width, batch_size, steps, warmup, model, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out_dir / "speed.csv", SPEED_COLUMNS)
    energy_source = rows[0]["energy_source"]
    command = (f"beyondbp bench speed --methods {','.join(methods)} --depth {depth} --width {width} "
               f"--batch-size {batch_size} --steps {steps} --model {model} --device {device} --out {out_dir}")
    meta = {"command": command, "model": model, "depth": depth, "width": width, "batch_size": batch_size,
            "steps": steps, "warmup": warmup, "device": str(resolve_device(device)),
            "threads": torch.get_num_threads(), "machine": machine_description(), "energy_source": energy_source,
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return rows


def speed_markdown(rows: list[dict[str, Any]], meta: dict[str, Any], heading: str = "###") -> str:
    lines = [f"{heading} {meta['model']}, {meta['depth']} hidden blocks of width {meta['width']}, "
             f"batch {meta['batch_size']} ({meta['device']})", "",
             f"Command: `{meta['command']}`. Machine: {meta['machine']}, {meta['threads']} threads. "
             f"Finished {meta['finished']}. Median of {meta['steps']} steps after {meta['warmup']} warm-up steps; "
             "ratios against the first method.", "",
             "| method | step time (ms) | time ratio | step memory (MB) | memory ratio | step energy (mJ) "
             "| energy ratio |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['step_time_ms']} | {r['step_time_ratio']} | {r['step_memory_mb']} | "
              f"{r['step_memory_ratio']} | {r.get('step_energy_mj') or '–'} | {r.get('step_energy_ratio') or '–'} |"
              for r in rows]
    lines += ["", f"Energy: {meta['energy_source']}." if "energy_source" in meta
              else "Energy: not measured (run before energy was recorded)."]
    return "\n".join(lines) + "\n"
