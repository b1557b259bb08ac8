"""Data sets: a registry of loaders that read the original file formats (no torchvision)."""

from __future__ import annotations

from pathlib import Path

from . import corpus, images, loaders, tabular, text  # noqa: F401  (registers the loaders)
from .dataset import Dataset, DataSplit, batches, validation_split
from .loaders import WithIndex
from .registry import DATASETS


def load_dataset(name: str, data_dir: Path | str | None = None, download: bool = False,
                 split_seed: int = 0, **corpus_options) -> DataSplit:
    """Load the data set called ``name`` (see ``beyondbp list``); a corpus (:data:`~.corpus.CORPORA`) also takes
    ``context`` and ``tokenizer`` (see :mod:`.corpus`)."""
    loader = DATASETS.get(name)
    options = {k: v for k, v in corpus_options.items() if v is not None} if name in corpus.CORPORA else {}
    return loader(data_dir=data_dir, download=download, split_seed=split_seed, **options)


__all__ = ["DATASETS", "Dataset", "DataSplit", "WithIndex", "batches", "load_dataset", "loaders", "validation_split"]
