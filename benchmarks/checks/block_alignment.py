"""Alignment with backprop, per block, of a suite's finished runs: the cosine between each method's gradient and
the exact one on the first 256 training samples at the run's final weights (``beyondbp align --run DIR``, which
writes ``DIR/alignment.json``), averaged over the layers of each block (the first two parts of a layer's name
when it has three or more, ``layer2.1`` of ``layer2.1.conv1``, otherwise the first, ``3`` of VGG's ``3.0``) and
printed as CSV, one row per method, seed and block:

    python benchmarks/checks/block_alignment.py resnet-fmnist fashion-mnist resnet20 \
        > benchmarks/checks/block-alignment-resnet20-2026-12-05.csv

Runs that already have ``alignment.json`` are not measured again.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from beyondbp.cli import main


def block_of(layer: str) -> str:
    parts = layer.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def block_cosines(run: Path) -> dict[str, float]:
    path = run / "alignment.json"
    if not path.is_file():
        with redirect_stdout(StringIO()):
            if main(["align", "--run", str(run)]) != 0:
                raise SystemExit(f"beyondbp align failed on {run}")
    blocks: dict[str, list[float]] = {}
    for layer, values in json.loads(path.read_text())["layers"].items():
        blocks.setdefault(block_of(layer), []).append(values["cosine"])
    return {block: statistics.fmean(values) for block, values in blocks.items()}


def main_check(suite: str, dataset: str, model: str) -> None:
    root = Path("runs/bench") / suite / dataset / model
    writer = csv.writer(sys.stdout)
    writer.writerow(["method", "seed", "block", "cosine"])
    for method_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run in sorted(method_dir.glob("seed*")):
            if not (run / "summary.json").is_file():
                continue
            seed = run.name.split("-")[0].removeprefix("seed")
            for block, cosine in block_cosines(run).items():
                writer.writerow([method_dir.name, seed, block, f"{cosine:.4f}"])


if __name__ == "__main__":
    main_check(*sys.argv[1:4])
