"""Text classification from files every Python installation has: which standard-library module a snippet of
source code comes from.

``python-modules``: the source files of ten modules of the running interpreter's standard library
(:data:`MODULES`), cut into non-overlapping snippets of :data:`SNIPPET` bytes; the label is the module. Inputs
are token ids (the bytes, a vocabulary of 256: ``[N, 64]`` integers, not standardised), for embedding
models (a Hugging Face BERT, a GRU). The test part of each module is its last fifth (snippets from the end of
the file), so no test snippet overlaps or neighbours a training one; each module contributes at most
:data:`PER_MODULE` snippets, evenly spaced over the file, so classes are balanced. The files differ between
Python versions, so the data do too: results are comparable on one interpreter version.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError
from .dataset import Dataset, DataSplit, one_hot
from .registry import DATASETS

MODULES = ("argparse", "ast", "dataclasses", "enum", "inspect", "pickle", "shutil", "subprocess", "tarfile",
           "typing")
SNIPPET = 64
PER_MODULE = 600
TEST_FRACTION = 0.2
VOCABULARY = 256


def snippets(path: Path, length: int, limit: int) -> np.ndarray:
    """At most ``limit`` non-overlapping snippets of ``length`` bytes, evenly spaced, in file order."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    count = len(data) // length
    chunks = data[: count * length].reshape(count, length)
    keep = np.linspace(0, count - 1, num=min(count, limit)).round().astype(int)
    return chunks[keep]


def split_snippets(files: list[Path], length: int = SNIPPET, per_file: int = PER_MODULE,
                   name: str = "python-modules") -> DataSplit:
    """One class per file; each file's last :data:`TEST_FRACTION` of snippets is its test part."""
    parts = {"train": ([], []), "test": ([], [])}
    for label, path in enumerate(files):
        chunks = snippets(path, length, per_file)
        cut = int(round(len(chunks) * (1 - TEST_FRACTION)))
        if cut < 1 or cut == len(chunks):
            raise DataFormatError(f"{path} is too short for {length}-byte snippets in a training and a test part")
        for part, rows in (("train", chunks[:cut]), ("test", chunks[cut:])):
            parts[part][0].append(rows)
            parts[part][1].append(np.full(len(rows), label))
    train, test = ((torch.as_tensor(np.concatenate(x), dtype=torch.long), np.concatenate(y))
                   for x, y in parts.values())
    return DataSplit(name, "classification", Dataset(train[0], one_hot(train[1], len(files))),
                     Dataset(test[0], one_hot(test[1], len(files))))


@DATASETS.register("python-modules", f"which of {len(MODULES)} standard-library modules a {SNIPPET}-byte snippet "
                                     f"of source comes from; token ids (bytes), from this Python's own files")
def python_modules(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [root / f"{module}.py" for module in MODULES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataFormatError(f"python-modules: this Python's standard library lacks {', '.join(missing)}")
    return split_snippets(files).from_source(str(root))
