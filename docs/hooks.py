"""MkDocs hooks: the benchmark results as pages of the site (read from ``benchmarks/``, not copied by hand) and
the CLI reference generated from the argparse declarations (``<!-- cli-reference -->``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cli-reference -->"


def on_files(files, config):
    """Every file under ``benchmarks/`` (RESULTS.md, NOTES.md, their plots and tables) at the same path in the site."""
    for path in sorted((ROOT / "benchmarks").rglob("*")):
        if path.is_file():
            files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"],
                              config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    from beyondbp.cli import build_parser

    return markdown.replace(MARKER, cli_reference(build_parser()))


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """One section per command: what it does, its usage line and a table of its options."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    sections = []
    for name, sub in commands.choices.items():
        rows = ["| option | meaning | default |", "|---|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            default = "" if action.default in (None, argparse.SUPPRESS, False) else f"`{action.default}`"
            text = (action.help or "").replace("|", "\\|").replace("%%", "%")
            choices = f" (one of {', '.join(map(str, action.choices))})" if action.choices else ""
            rows.append(f"| `{', '.join(action.option_strings)}` | {text}{choices} | {default} |")
        usage = " ".join(sub.format_usage().split())
        sections.append(f"## beyondbp {name}\n\n{helps.get(name, '')}\n\n```text\n{usage}\n```\n\n" + "\n".join(rows))
    return "\n\n".join(sections) + "\n"
