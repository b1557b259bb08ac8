"""Layer-parallel training: stages of blocks on separate processes (see :mod:`.stage`)."""

from __future__ import annotations

from .split import BALANCES, contiguous_split
from .stage import PIPELINE_METHODS, StageExecutor, check_method, check_sequence

__all__ = ["BALANCES", "PIPELINE_METHODS", "StageExecutor", "check_method", "check_sequence", "contiguous_split"]
