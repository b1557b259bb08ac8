"""Merge two sets of ``reproduce.py`` outputs (one file per suite: ``DIR/old-SUITE.csv`` made with the old code
on PYTHONPATH, ``DIR/new-SUITE.csv`` with the new) into one table: the final metric of each at full precision
and whether they are identical. Suites with only one side are listed as missing.

    .venv/bin/python benchmarks/checks/reproduce_compare.py runs/reproduce OLD_COMMIT NEW_COMMIT OUT.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def first_row(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with path.open() as f:
        return next(csv.DictReader(f), None)


def main(folder: str, old: str, new: str, out: str) -> int:
    root = Path(folder)
    suites = sorted({p.stem.split("-", 1)[1] for p in root.glob("old-*.csv")} |
                    {p.stem.split("-", 1)[1] for p in root.glob("new-*.csv")})
    rows = []
    for suite in suites:
        a, b = first_row(root / f"old-{suite}.csv"), first_row(root / f"new-{suite}.csv")
        known = a or b
        rows.append({"suite": suite, "dataset": known["dataset"], "model": known["model"], "method": known["method"],
                     "seed": known["seed"], "lr": known["lr"], "epochs": known["epochs"], "metric": known["metric"],
                     "committed": known["committed"], f"old_{old}": a["now"] if a else "missing",
                     f"new_{new}": b["now"] if b else "missing",
                     "identical": (a["now"] == b["now"]) if a and b else "missing"})
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = [r for r in rows if r["identical"] != "missing"]
    print(f"{sum(r['identical'] is True for r in done)} of {len(done)} compared suites identical; "
          f"{len(rows) - len(done)} missing")
    return 0 if all(r["identical"] is True for r in done) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
