"""Where a forward-gradient step spends its time, by operation (issue 21), next to backprop's step.

The setting of `bench speed`'s fg table: MLP of 4 hidden blocks of width 1024, tanh, batch 256, BCE. For
each method the script runs warm-up steps, then profiles a few steps with torch.profiler and writes the
share of self CPU time of the operations that take most of it.

    .venv/bin/python benchmarks/checks/fg_profile.py --out benchmarks/checks/fg-profile-DATE.csv
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch
from torch.profiler import profile

from beyondbp.methods import make_method
from beyondbp.models import build_model
from beyondbp.objectives import make_objective

METHODS = ["bp", "fg:k1-single", "fg:k4-mean", "fg:k16-mean", "fg:k1-single-rademacher", "fg:k4-mean-rademacher",
           "fg:k16-mean-rademacher", "fg:k4-mean-activities"]


def profile_step(spec: str, x: torch.Tensor, t: torch.Tensor, objective, steps: int = 3) -> list[dict]:
    torch.manual_seed(0)
    model = build_model("mlp", (x.shape[1],), t.shape[1], objective.output_activation(), hidden=(1024,) * 4,
                        activation="tanh")
    method = make_method(spec)
    method.attach(model, num_outputs=t.shape[1])
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        method.step(model, x, t, None, objective)
    with profile() as prof:
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            method.step(model, x, t, None, objective)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"method": spec, "operation": e.key, "ms_per_step": e.self_cpu_time_total / 1000 / steps,
             "share": e.self_cpu_time_total / total} for e in events[:6]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    objective = make_objective("bce", "classification")
    torch.manual_seed(0)
    x = torch.randn(256, 1024)
    t = objective.targets(torch.randint(0, 10, (256,)), 10)
    rows = [row for spec in METHODS for row in profile_step(spec, x, t, objective)]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"{row['method']:24s} {row['operation']:28s} {row['ms_per_step']:8.1f} ms  {row['share']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
