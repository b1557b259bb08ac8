"""The prepared GPU check (issue 36): samples per second and peak memory of bp, f3 (forward execution), dfa and
fg (k = 4) on ResNet-20 and on the MLP of ``bench speed``, on the first CUDA device, one warm-up epoch then one
timed epoch each, on generated data. Writes OUT/gpu.csv with the device named. Run by gpu.sh; on a machine
without CUDA it runs the same on the CPU with a tenth of the data (the path CI can check).

    python benchmarks/checks/gpu.py OUT
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from beyondbp import Trainer, make_method, make_objective
from beyondbp.bench.machine import machine_description
from beyondbp.data import Dataset
from beyondbp.models.registry import build_model

METHODS = ("bp", "f3", "dfa", "fg:k4")
#: model name, one sample's shape, samples per epoch, batch size (the MLP is bench speed's: 8 x 1024)
SETTINGS = (("resnet20", (3, 32, 32), 8192, 128), ("mlp", (1024,), 16384, 1024))


def measure(model_name: str, shape: tuple[int, ...], samples: int, batch_size: int, method: str,
            device: torch.device) -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    data = Dataset(torch.randn(samples, *shape, generator=generator),
                   F.one_hot(torch.randint(0, 10, (samples,), generator=generator), 10).float()).to(device)
    torch.manual_seed(0)
    model = build_model(model_name, shape, 10, nn.Identity(), hidden=(1024,) * 8, activation="tanh")
    trainer = Trainer(model, make_method(method), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                      make_objective("ce", "classification"), device=device, progress=False)
    trainer.fit(data, epochs=1, batch_size=batch_size)  # warm-up: kernels chosen, memory pools filled
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    trainer.fit(data, epochs=1, batch_size=batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"model": model_name, "method": trainer.method.label, "batch_size": batch_size,
            "samples_per_second": samples / seconds, "peak_memory_mb": peak}


def main(out: Path) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = 1 if device.type == "cuda" else 10
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_description()
    rows = []
    for model_name, shape, samples, batch_size in SETTINGS:
        for method in METHODS:
            row = measure(model_name, shape, samples // scale, batch_size, method, device)
            rows.append({**row, "device": name, "date": time.strftime("%Y-%m-%d")})
            print(f"{model_name:9s} {row['method']:26s} {row['samples_per_second']:10.0f} samples/s "
                  f"{row['peak_memory_mb']:8.0f} MiB", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu")))
