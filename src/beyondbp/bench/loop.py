"""``beyondbp bench loop``: the Trainer's own cost, against a plain hand-written PyTorch loop.

Both train the same model (same seed) with backprop on the same generated images, with the same optimizer
(SGD, momentum 0.9, weight decay 5e-4), the same cosine schedule per step, the same crop-flip augmentation
and the same batches (shuffled by the same generator); the plain loop is what a user would write: index,
augment, forward, ``cross_entropy``, backward, step, schedule, ``loss.item()``. One epoch each, in turn, for
``rounds`` rounds; the median samples per second of each is reported with their ratio. What the Trainer adds
per step (the method's checks, the objective's one-hot targets, the health check, progress, energy
metering) is what the ratio measures.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..data.augment import CropFlip
from ..execution import resolve_device
from ..lr_schedule import ScheduleOptions
from ..methods import make_method
from ..models.registry import build_model
from ..objectives import make_objective
from ..streams import AUGMENT, epoch_generator
from ..tables import write_rows
from ..train import Trainer
from .machine import machine_description

#: The models compared, with the input shape of their generated images.
LOOP_MODELS = {"resnet20": (3, 32, 32), "mlp": (1, 28, 28)}
CLASSES = 10
SEED = 0


def generated_images(shape: tuple[int, ...], samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randn(samples, *shape, generator=generator), torch.randint(0, CLASSES, (samples,),
                                                                             generator=generator)


def setup(name: str, shape: tuple[int, ...], device: torch.device):
    """The seeded model, its optimizer and its cosine schedule."""
    torch.manual_seed(SEED)
    model = build_model(name, shape, CLASSES, nn.Identity(), hidden=(1024, 1024), activation="relu").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return model, optimizer, ScheduleOptions(lr_schedule="cosine")


def plain_epoch(name: str, x: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Seconds for one epoch of the hand-written loop."""
    steps = -(-len(x) // batch_size)
    model, optimizer, schedule = setup(name, tuple(x.shape[1:]), device)
    scheduler = schedule.scheduler(optimizer, 1, steps)
    augment, generator = CropFlip(), epoch_generator(SEED, 1, AUGMENT)
    x, labels = x.to(device), labels.to(device)
    started = time.perf_counter()
    model.train()
    order = torch.randperm(len(x), generator=epoch_generator(SEED, 1)).to(device)
    total = 0.0
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        inputs = augment(x[index], generator) if x.dim() == 4 else x[index]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs), labels[index])
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item()
    synchronize(device)
    return time.perf_counter() - started


def trainer_epoch(name: str, x: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Seconds for one epoch of ``Trainer.fit`` with backprop (no evaluation set, no output folder)."""
    model, optimizer, schedule = setup(name, tuple(x.shape[1:]), device)
    data = Dataset(x, F.one_hot(labels, CLASSES).float()).to(device)
    trainer = Trainer(model, make_method("bp"), optimizer, make_objective("ce", "classification"), device=device,
                      progress=False, schedule=schedule, augmentation=CropFlip() if x.dim() == 4 else None,
                      step_memory=False)  # the plain loop measures no memory either
    started = time.perf_counter()
    trainer.fit(data, epochs=1, batch_size=batch_size, seed=SEED)
    synchronize(device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_loop_bench(models: list[str], samples: int, batch_size: int, rounds: int, out: Path,
                   device: str = "auto") -> list[dict[str, Any]]:
    """Median samples/s of both loops per model; writes ``loop.csv`` and ``meta.json`` under ``out``."""
    where = resolve_device(device)
    rows = []
    for name in models:
        x, labels = generated_images(LOOP_MODELS[name], samples)
        times: dict[str, list[float]] = {"plain": [], "beyondbp": []}
        for _ in range(rounds):
            times["plain"].append(plain_epoch(name, x, labels, batch_size, where))
            times["beyondbp"].append(trainer_epoch(name, x, labels, batch_size, where))
        speed = {kind: samples / statistics.median(seconds) for kind, seconds in times.items()}
        rows.append({"model": name, "samples": samples, "batch_size": batch_size, "rounds": rounds,
                     "plain_samples_per_second": speed["plain"], "beyondbp_samples_per_second": speed["beyondbp"],
                     "ratio": speed["beyondbp"] / speed["plain"]})
    out.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out / "loop.csv")
    (out / "meta.json").write_text(json.dumps({"machine": machine_description(), "device": str(where),
                                               "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    return rows


def loop_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Backprop through `Trainer.fit` against a plain PyTorch loop ({meta['device']}, {meta['machine']}, "
             f"{meta['date']}); median of {rows[0]['rounds']} interleaved epochs of {rows[0]['samples']} samples.",
             "", "| model | plain samples/s | beyondbp samples/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['plain_samples_per_second']:.0f} | {r['beyondbp_samples_per_second']:.0f} | "
              f"{r['ratio']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"
