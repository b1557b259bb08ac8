"""Output folders: a run writes only into a folder, never over a user's file."""

from __future__ import annotations

from pathlib import Path

from .errors import BeyondBPError


def output_folder(path: Path | str, name: str = "--out") -> Path:
    """``path`` as an output folder, refused in one line when it, or a folder it would be made in, is an existing
    file (``name`` is the setting that gave it)."""
    out = Path(path)
    for place in (out, *out.parents):
        if place.exists():
            if not place.is_dir():
                where = "" if place == out else f" (its part {place})"
                raise BeyondBPError(f"{name} {out}{where} is an existing file, not a folder; choose another path")
            break
    return out
