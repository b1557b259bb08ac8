"""What every command module shares: the one-line-error parser, output folders, and the run settings' flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import RunConfig
from ..folders import output_folder as checked_folder
from ..options import add_options, from_args


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The flags of every :class:`RunConfig` setting (declared by the sections), and ``--no-progress``."""
    add_options(parser, RunConfig)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from(args: argparse.Namespace, method: str, seed: int) -> RunConfig:
    return from_args(RunConfig, args, method=method, seed=seed)


def data_name(args: argparse.Namespace) -> str:
    """The data's name in default output folders: the data set, or the stem of ``--data``."""
    return Path(args.data).stem if args.data else args.dataset


def output_folder(given: Path | None, default: Path) -> Path:
    """``--out`` (or the default), refused when it names an existing file: nothing of the user's is overwritten."""
    return checked_folder(given or default)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
