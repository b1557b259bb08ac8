"""``beyondbp bench memory SUITE``: the step memory of each of a suite's methods on each of its models.

Every run records ``step_memory_mb`` (:mod:`beyondbp.memory`: the peak memory of one gradient estimate beyond
parameters and optimizer state; not measured for pipeline stages, whose cells stay empty). A suite whose runs
predate it can have it measured on its own: one epoch of two batches per (data set, model, method), with the
suite's settings and its first seed, in this process, one after another. Step memory depends on the model, the
method, the batch and the data's shape, not on how long a run trains, so two batches measure what the suite's
runs allocate.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..experiment import run
from ..tables import write_rows
from .machine import machine_description
from .suite import Suite

MEMORY_COLUMNS = ("dataset", "model", "method", "step_memory_mb", "ratio")


def measure_suite_memory(suite: Suite, device: str = "auto") -> list[dict[str, Any]]:
    """One row per (data set, model, method): the step memory in MiB, and its ratio to the first method's."""
    rows = []
    for dataset, model, method in tqdm(suite.cells(), desc=f"{suite.name}: step memory", leave=False):
        config = suite.config(dataset, model, method, suite.seeds[0], lr=1e-3, epochs=1)
        config = dataclasses.replace(config, train_samples=2 * config.batch_size, device=device)
        summary = run(config, None, progress=False)
        measured = summary.get("step_memory_mb")  # none for pipeline stages, each in a process of its own
        rows.append({"dataset": dataset, "model": model, "method": method,
                     "step_memory_mb": "" if measured is None else round(measured, 2)})
    for row in rows:
        first = next(r for r in rows if (r["dataset"], r["model"]) == (row["dataset"], row["model"]))
        both = row["step_memory_mb"] != "" and first["step_memory_mb"] not in ("", 0)
        row["ratio"] = round(row["step_memory_mb"] / first["step_memory_mb"], 3) if both else ""
    return rows


def run_memory_bench(suite: Suite, results_dir: Path, device: str = "auto") -> Path:
    """Measure and write ``SUITE-memory.csv`` and ``SUITE-memory.json`` (command, machine, date) into
    ``results_dir``."""
    rows = measure_suite_memory(suite, device)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{suite.name}-memory.csv"
    write_rows(rows, path, MEMORY_COLUMNS)
    meta = {"command": f"beyondbp bench memory {suite.name} --device {device}", "machine": machine_description(),
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    path.with_name(f"{suite.name}-memory.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def memory_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Command: `{meta['command']}`. Machine: {meta['machine']}. Finished {meta['finished']}.", "",
             "| data set | model | method | step memory (MiB) | × first |", "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['model']} | {r['method']} | {r['step_memory_mb'] or '–'} | "
              f"{r['ratio'] or '–'} |" for r in rows]
    return "\n".join(lines) + "\n"


__all__ = ["measure_suite_memory", "memory_markdown", "run_memory_bench"]
