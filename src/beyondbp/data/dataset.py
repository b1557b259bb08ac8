"""In-memory data sets, train/test splits, standardisation and batching."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import BeyondBPError


@dataclass
class Dataset:
    """Inputs ``x`` (float32, ``[N, ...]``, or token ids) and targets ``t`` (float32, ``[N, C]``).

    Classification targets are one-hot; regression targets are standardised (see
    :attr:`DataSplit.target_scale`). Token targets (next-token prediction, task ``lm``) are class
    indices ``[N, T]`` (int64, :data:`~beyondbp.objectives.IGNORE_INDEX` for padding) with
    ``num_classes`` the vocabulary's size: one-hot rows ``[N, T, C]`` would not fit in memory.
    """

    x: Tensor
    t: Tensor
    num_classes: int | None = None

    def __post_init__(self):
        if len(self.x) != len(self.t):
            raise ValueError(f"{len(self.x)} inputs but {len(self.t)} targets")
        if not self.t.is_floating_point() and self.t.dim() == 2:
            if self.num_classes is None:
                raise BeyondBPError("Dataset targets of integers [N, T] are classes per token: give num_classes (the "
                                    "vocabulary's size) too")
            self.t = self.t.long()
        elif not self.t.is_floating_point() or self.t.dim() != 2:
            raise BeyondBPError(f"Dataset targets must be float [N, C] (one-hot rows for classes, values for "
                                f"regression) or class indices per token [N, T] with num_classes, got {self.t.dtype} "
                                f"of shape {tuple(self.t.shape)}; for class indices per sample use "
                                f"torch.nn.functional.one_hot(labels, C).float()")
        if self.x.is_floating_point() and self.x.dtype != torch.float32:
            self.x = self.x.float()  # the models' precision: float64 inputs would meet float32 weights
        if self.t.is_floating_point() and self.t.dtype != torch.float32:
            self.t = self.t.float()

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def tokens(self) -> int | None:
        """Tokens per sample when the targets are classes per token (``[N, T]`` indices), else None."""
        return None if self.t.is_floating_point() else self.t.shape[1]

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.tokens is not None else self.t.shape[1]

    def rows(self, index) -> Dataset:
        """The samples ``index`` (a slice, indices or a boolean mask) as a Dataset."""
        return Dataset(self.x[index], self.t[index], self.num_classes)

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.x.to(device), self.t.to(device), self.num_classes)


@dataclass
class DataSplit:
    """A named data set's train and test parts, with what is needed to report metrics.

    ``target_scale`` (regression only) is the training targets' standard deviation per
    output: errors are reported in the original units by multiplying with it.
    """

    name: str
    task: str  # "classification", "regression" or "lm" (next token)
    train: Dataset
    test: Dataset
    target_scale: Tensor | None = None
    #: Where the data came from: the folder or file read, or "bundled ..." / "generated ...".
    source: str = ""
    #: A corpus's :class:`~.corpus.Vocabulary` (task ``lm``): token ids to text and back.
    vocabulary: Any = None

    def from_source(self, source: str) -> DataSplit:
        return dataclasses.replace(self, source=source)


def one_hot(labels: np.ndarray, num_classes: int) -> Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), num_classes).float()


def standardize(train: np.ndarray, test: np.ndarray, axes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Standardise both parts with the mean and std of ``train`` over ``axes`` (training statistics only).

    Constant features (std 0) are only centred.
    """
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True)
    std[std == 0] = 1.0
    scale = lambda a: torch.as_tensor((np.asarray(a, dtype=np.float64) - mean) / std, dtype=torch.float32)
    return scale(train), scale(test)


def split_indices(n: int, test_fraction: float, seed: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of ``range(n)``, stratified by ``labels`` when given."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(n), test_size=test_fraction, random_state=seed, stratify=labels
    )
    return np.sort(train), np.sort(test)


def classification_split(name: str, x_train, y_train, x_test, y_test, num_classes: int,
                         axes: tuple[int, ...]) -> DataSplit:
    """Standardise inputs over ``axes`` with training statistics and one-hot encode the labels."""
    xs_train, xs_test = standardize(x_train, x_test, axes)
    return DataSplit(
        name, "classification",
        Dataset(xs_train, one_hot(y_train, num_classes)),
        Dataset(xs_test, one_hot(y_test, num_classes)),
    )


def regression_split(name: str, x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float = 0.2) -> DataSplit:
    """Seeded split of a tabular regression set; inputs and targets standardised on the training part."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    train, test = split_indices(len(x), test_fraction, seed)
    return regression_parts(name, x[train], y[train], x[test], y[test], axes=(0,))


def regression_parts(name: str, x_train, y_train, x_test, y_test, axes: tuple[int, ...]) -> DataSplit:
    """Inputs standardised over ``axes`` and targets ``[N, k]`` per output, with training statistics;
    ``target_scale`` turns errors back into the targets' units."""
    xs_train, xs_test = standardize(x_train, x_test, axes)
    t_train, t_test = standardize(y_train, y_test, axes=(0,))
    scale = torch.as_tensor(np.asarray(y_train, dtype=np.float64).std(axis=0), dtype=torch.float32)
    return DataSplit(name, "regression", Dataset(xs_train, t_train), Dataset(xs_test, t_test), scale)


def batches(dataset: Dataset, batch_size: int, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(x, t, index)`` batches; shuffled with ``generator``, in order without it."""
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield dataset.x[index].to(device), dataset.t[index].to(device), index.to(device)


def validation_split(data: DataSplit, fraction: float, seed: int) -> DataSplit:
    """Carve a validation part out of ``data.train``; it takes the place of the test part.

    Used to choose hyperparameters without looking at the test set: seeded (stratified for classification), or,
    for a corpus (task ``lm``), its last ``fraction`` of chunks, just before the test part in the text.
    """
    if data.task == "lm":
        cut = len(data.train) - max(1, round(len(data.train) * fraction))
        train, validation = np.arange(cut), np.arange(cut, len(data.train))
    else:
        labels = data.train.t.argmax(dim=1).numpy() if data.task == "classification" else None
        train, validation = split_indices(len(data.train), fraction, seed, labels)
    return dataclasses.replace(data, name=f"{data.name} (validation)", train=data.train.rows(train),
                               test=data.train.rows(validation))
