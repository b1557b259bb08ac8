"""The registry of data sets: name -> loader ``(data_dir, download, split_seed) -> DataSplit``."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .dataset import DataSplit

DATASETS: Registry[Callable[..., DataSplit]] = Registry("dataset")
