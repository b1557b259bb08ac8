"""The documentation's examples against the code: every ``beyondbp`` command in a ``bash`` block of README.md and
docs/ parses with today's flags and, for train, compare and tune, validates its settings (a renamed flag or method
fails here); the getting-started page's commands and Python, and README's Python, run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beyondbp.cli import build_parser
from beyondbp.cli.common import config_from

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
RUN = [ROOT / "docs" / "getting-started.md"]


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def commands(block: str) -> list[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split("  #")[0].split(" # ")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


EXAMPLES = [(page, line) for page in PAGES for block in blocks(page, "bash") for line in commands(block)
            if line.startswith("beyondbp ")]


def test_the_pages_hold_examples():
    assert len(EXAMPLES) > 40 and {page.name for page, _ in EXAMPLES} >= {"README.md", "getting-started.md",
                                                                           "language-models.md", "own-model.md"}


@pytest.mark.parametrize("page, line", EXAMPLES, ids=[f"{p.relative_to(ROOT)}:{i}" for i, (p, _) in
                                                       enumerate(EXAMPLES)])
def test_every_documented_command_parses_and_validates(page, line):
    words = shlex.split(line)[1:]
    if " ".join(words[:2]) in ("bench speed", "bench pipeline", "bench loop", "autopq advanced"):
        words = [" ".join(words[:2]), *words[2:]]
    try:
        args = build_parser().parse_args(words)
    except SystemExit as exit:
        pytest.fail(f"{page.relative_to(ROOT)}: '{line}' does not parse (exit {exit.code})")
    if getattr(args, "device", None) == "cuda" and not torch.cuda.is_available():
        args.device = "cpu"  # a GPU example, checked here without one
    if args.command in ("train", "tune"):
        config_from(args, args.method, args.seed).validate()
    elif args.command == "compare":
        for method in args.methods:
            config_from(args, method, 1).validate()


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN, ids=lambda p: p.name)
def test_the_getting_started_examples_run(page, tmp_path):
    for block in blocks(page, "bash"):
        for line in commands(block):
            done = subprocess.run([sys.executable, "-m", "beyondbp", *shlex.split(line)[1:], "--no-progress"]
                                  if line.startswith(("beyondbp train", "beyondbp compare")) else
                                  [sys.executable, "-m", "beyondbp", *shlex.split(line)[1:]],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{line}\n{done.stderr}"
    for block in blocks(page, "python"):
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr


def test_the_readme_python_example_runs(tmp_path):
    (block,) = blocks(ROOT / "README.md", "python")
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
