"""Every ``beyondbp`` command of README.md and docs/ run as written, page by page in a fresh folder, with small
settings appended (one epoch, 200 training samples, one seed, a few trials: the last value of a flag wins) and
small files in the formats the pages name (``my_data.npz``, ``table.csv``, ``my_corpus.txt``, ``my_load.csv``);
the example scripts the pages name, for one epoch; and the Python examples. A renamed flag, a changed default
or a broken workflow (a ``generate`` after its ``train``, a ``--resume``) fails here. ``make docs`` runs these
(marker ``docs``); ``make test`` leaves them out.

What is not run says why in :data:`NOT_RUN`: suites that take hours, a database server, the network.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_docs import EXAMPLES, PAGES, ROOT, blocks, commands

pytestmark = pytest.mark.docs
AUTOPQ_DATA = ROOT.parent / "shared" / "data" / "autopq"

#: Appended to a command by its first words: the smallest settings that still run every part of it.
SMALL = {
    "train": ["--epochs", "1", "--train-samples", "200", "--no-progress"],
    "compare": ["--epochs", "1", "--train-samples", "200", "--seeds", "1", "--no-progress"],
    "tune": ["--epochs", "1", "--train-samples", "200", "--trials", "2", "--no-progress"],
    "generate": ["--tokens", "20"],
    "approx": ["--samples", "5"],
    "optimize": ["--steps", "20"],
    "autopq": ["--stride", "24", "--cinn-epochs", "2", "--trials", "2", "--no-progress"],
    "autopq-advanced": ["--stride", "12", "--cinn-epochs", "2", "--trials", "2", "--workers", "1", "--no-progress"],
}
#: Budgets of the two documented steps of one AutoPQ-advanced search (60, then 100 to continue it).
BUDGETS = {"60": "2", "100": "3"}
#: Commands validated by tests/test_docs.py but not run here, by a phrase they contain, with the reason.
NOT_RUN = {
    "beyondbp bench ": "a suite or benchmark of minutes to hours (tests/test_bench.py runs small ones)",
    "beyondbp results": "rewrites the repository's RESULTS.md from benchmarks/results",
    "postgresql://": "needs a database server",
    "--download": "needs the network",
}


def write_user_files(folder: Path) -> None:
    """The files the pages name, small, in their documented formats."""
    rng = np.random.default_rng(0)
    np.savez(folder / "my_data.npz", x=rng.normal(size=(300, 8, 16)).astype(np.float32), y=np.arange(300) % 3)
    features = rng.normal(size=(300, 4))
    table = pd.DataFrame(features, columns=["a", "b", "c", "d"])
    table["label"] = np.where(features[:, 0] + features[:, 1] > 0, "yes", "no")
    table.to_csv(folder / "table.csv", index=False)
    text = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(4000))
    (folder / "my_corpus.txt").write_text(text)
    hours = pd.date_range("2021-01-01", periods=24 * 40, freq="h")
    daily = np.sin(2 * np.pi * hours.hour / 24)
    pd.DataFrame({"timestamp": hours, "load": 10 + daily + rng.normal(0, 0.2, len(hours)),
                  "temp": 15 + 5 * daily, "wind": rng.uniform(0, 10, len(hours))}).to_csv(folder / "my_load.csv",
                                                                                           index=False)
    (folder / "examples").symlink_to(ROOT / "examples")


def small(line: str) -> list[str] | None:
    """The command with small settings, or None where it is not run here."""
    if any(phrase in line for phrase in NOT_RUN):
        return None
    words = shlex.split(line.replace("../shared/data/autopq", str(AUTOPQ_DATA)))[1:]
    if "--data-dir" in words and not Path(words[words.index("--data-dir") + 1]).is_dir():
        return None  # the paper's AutoPQ series, which a clone may not have
    if "--budget-trials" in words:
        i = words.index("--budget-trials") + 1
        words[i] = BUDGETS[words[i]]
    return [*words, *SMALL.get(words[0], [])]


def commands_of(page: Path) -> list[str]:
    return [line for p, line in EXAMPLES if p == page]


@pytest.mark.parametrize("page", [p for p in PAGES if commands_of(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_of_the_page_runs(page, tmp_path):
    write_user_files(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for line in commands_of(page):
        words = small(line)
        if words is None:
            continue
        done = subprocess.run([sys.executable, "-m", "beyondbp", *words], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600, env=environment)
        assert done.returncode == 0, f"{page.relative_to(ROOT)}: {line}\n{done.stderr[-3000:]}"


SCRIPTS = [(page, line) for page in PAGES for block in blocks(page, "bash") for line in commands(block)
           if line.startswith("python examples/")]


@pytest.mark.parametrize("page, line", SCRIPTS, ids=[line.split()[1] for _, line in SCRIPTS])
def test_every_documented_example_script_runs(page, line, tmp_path):
    """``python examples/NAME.py ...`` as the page gives it, for one epoch."""
    words = shlex.split(line)[1:]
    done = subprocess.run([sys.executable, str(ROOT / words[0]), *words[1:], "--epochs", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page.relative_to(ROOT)}: {line}\n{done.stderr[-3000:]}"


def test_the_python_examples_run(tmp_path):
    """usage.md's example, then diagnostics.md's fragment, which continues it (the model, method and a batch)."""
    usage, = blocks(ROOT / "docs" / "usage.md", "python")
    fragment, = blocks(ROOT / "docs" / "how-to" / "diagnostics.md", "python")
    script = f"{usage}\n{fragment}\nassert 'cosine' in report['layers']['0.1']\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
