"""Re-run one committed run of each suite with today's code and compare its final test metric.

For every suite with results in benchmarks/results/, the run chosen is the cheapest one (by its
recorded training seconds) whose method is not `bp` or `shallow`, so that the code that changed
(feedback points, options, schedules) is what gets exercised. The learning rate is the one the suite
chose (SUITE-lr.csv), the thread count the one the suite ran with (cores / jobs in SUITE-meta.json).
The check is equality to 1e-9 relative (SUITE.csv stores the metric at full precision).

    .venv/bin/python benchmarks/checks/reproduce.py                 # every suite
    .venv/bin/python benchmarks/checks/reproduce.py cnn oialr       # some suites
    .venv/bin/python benchmarks/checks/reproduce.py --out runs/reproduce/old.csv   # with PYTHONPATH=OLD/src

Prints one line per suite and writes runs/reproduce/reproduce.csv (or --out FILE) with the metrics at
full precision; exit code 1 if any run differs. The results depend on the processor and the thread
count (float sums in another order), so a run made on another machine may differ in the last digits or,
after many steps, in the third decimal; to tell a change of code from a change of machine, run this
script with the old code too (a `git worktree` of the old commit on PYTHONPATH, `--out` another file)
and compare the two files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from beyondbp.bench.suite import load_suite
from beyondbp.experiment import run
from beyondbp.tables import write_rows

RESULTS = Path("benchmarks") / "results"
REFERENCE_METHODS = {"bp", "shallow"}


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def cheapest_run(name: str) -> dict[str, str]:
    """The suite's committed row (with its seconds per epoch) of the cheapest non-reference run."""
    cost = {(r["dataset"], r["model"], r["method"], r["seed"]): float(r["seconds_per_epoch"])
            for r in read(RESULTS / f"{name}-cost.csv")}
    rows = [r for r in read(RESULTS / f"{name}.csv") if r["final"] not in ("", "nan")
            and r["method"].split(":")[0] not in REFERENCE_METHODS]
    return min(rows, key=lambda r: cost[(r["dataset"], r["model"], r["method"], r["seed"])] * int(r["epochs"]))


def reproduce(name: str) -> dict[str, object]:
    suite = load_suite(name)
    row = cheapest_run(name)
    lr = next(float(r["lr"]) for r in read(RESULTS / f"{name}-lr.csv")
              if (r["dataset"], r["model"], r["method"]) == (row["dataset"], row["model"], row["method"])
              and r["chosen"] == "True")
    jobs = json.loads((RESULTS / f"{name}-meta.json").read_text())["jobs"]
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    config = suite.config(row["dataset"], row["model"], row["method"], int(row["seed"]), lr, int(row["epochs"]))
    with tempfile.TemporaryDirectory() as out:
        summary = run(config, Path(out) / "run", progress=False)
    now, committed = float(summary[row["metric"]]), float(row["final"])
    return {"suite": name, "dataset": row["dataset"], "model": row["model"], "method": row["method"],
            "seed": row["seed"], "lr": lr, "epochs": row["epochs"], "metric": row["metric"],
            "committed": committed, "now": now, "equal": math.isclose(now, committed, rel_tol=1e-9)}


def main(arguments: list[str]) -> int:
    out = Path("runs") / "reproduce" / "reproduce.csv"
    if arguments[:1] == ["--out"]:
        out, arguments = Path(arguments[1]), arguments[2:]
    names = arguments or sorted(p.name[:-len("-meta.json")] for p in RESULTS.glob("*-meta.json"))
    rows = []
    for name in names:
        result = reproduce(name)
        rows.append(result)
        print(f"{name:18s} {result['method']:28s} seed {result['seed']} {result['metric']}: committed "
              f"{result['committed']:.6g}, now {result['now']:.6g} {'equal' if result['equal'] else 'DIFFERENT'}",
              flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_rows(rows, out)
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
