"""F³ in suite ``resnet-fmnist`` (ResNet-20) at other rates and with another signal: whether its divergence at
the recipe's rate belongs to the rate or to the signal. Each (signal, rate) is one run of seed 1 with the
suite's ``f3`` settings (the recipe, ``feedback_batch_mean``) but that rate and signal, in
``runs/checks/f3-rate-signal/``; a finished run is read, not repeated. Prints CSV:

    python benchmarks/checks/f3_rate_signal.py f3:delayed_error_one_hot 0.01 0.002 \\
        > benchmarks/checks/f3-rate-signal-2026-12-06.csv
    python benchmarks/checks/f3_rate_signal.py f3:delayed_error_softmax 0.05 0.01 | tail -n +2 \\
        >> benchmarks/checks/f3-rate-signal-2026-12-06.csv
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

from beyondbp.bench.suite import load_suite
from beyondbp.experiment import run

SEED = 1


def measured(method: str, lr: float) -> list[dict]:
    """The run's epoch records (trained first where it has not finished)."""
    suite = load_suite("resnet-fmnist")
    out = Path("runs/checks/f3-rate-signal") / f"{method.replace(':', '-')}-lr{lr:g}"
    if not (out / "summary.json").is_file():
        config = suite.config("fashion-mnist", "resnet20", "f3", SEED, lr=lr,
                              epochs=suite.datasets["fashion-mnist"]["epochs"])
        run(dataclasses.replace(config, method=method), out, progress=False)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main_check(method: str, rates: list[float]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["method", "lr", "seed", "test_accuracy", "final_train_loss", "max_train_loss"])
    for lr in rates:
        records = measured(method, lr)
        losses = [r["train_loss"] for r in records]
        writer.writerow([method, lr, SEED, records[-1]["test_accuracy"], f"{losses[-1]:.4f}", f"{max(losses):.4f}"])


if __name__ == "__main__":
    main_check(sys.argv[1], [float(v) for v in sys.argv[2:]])
