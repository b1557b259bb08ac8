"""Atomic checkpoints: written to a temporary file, then renamed over the old one."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import BeyondBPError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state saved at ``path``; a file that is not a complete checkpoint is a :class:`BeyondBPError`."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise BeyondBPError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); "
                            f"delete it to start again") from None
    if not isinstance(state, dict) or not {"run_info", "history", "model"} <= set(state):
        raise BeyondBPError(f"{path} is not a beyondbp checkpoint; delete it to start again")
    return state
