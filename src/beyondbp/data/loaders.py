"""Any data in Python: a ``DataLoader`` or any iterable of ``(x, t)`` or ``(x, t, index)`` batches.

The Trainer and the evaluation take either an in-memory :class:`~.dataset.Dataset` (shuffled
by the run's seed and epoch) or such an iterable, iterated once per epoch in its own order.
Targets may be class indices (``[batch]``, or ``[batch, T]`` per token, integers) or values
``[batch, C]``; the objective converts them (:meth:`~beyondbp.objectives.Objective.targets`). F³
needs every sample's index in the training set: :class:`WithIndex` makes any map-style dataset yield it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BeyondBPError
from .dataset import Dataset, batches

Batch = tuple[Tensor, Tensor, Tensor | None]


class WithIndex(torch.utils.data.Dataset):
    """A map-style dataset whose items ``(x, t)`` become ``(x, t, i)``, ``i`` the item's index.

    ``DataLoader(WithIndex(my_dataset), batch_size=50, shuffle=True)`` then yields
    ``(x, t, index)`` batches, which F³'s per-sample buffer needs.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise BeyondBPError(f"WithIndex expects items (x, t), got {type(item).__name__}"
                                f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}")
        return item[0], item[1], i


def unpack(batch: Any, device: torch.device | str) -> Batch:
    """``(x, t, index)`` on ``device`` from a batch ``(x, t)`` or ``(x, t, index)`` (index None if absent)."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        size = f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else ""
        raise BeyondBPError(f"batches must be (x, t) or (x, t, index), got {type(batch).__name__}{size}")
    x, t, *rest = (torch.as_tensor(part).to(device, non_blocking=True) for part in batch)  # async from pinned
    return x, t, (rest[0] if rest else None)


def iterate(data: Dataset | Iterable, batch_size: int, generator: torch.Generator | None,
            device: torch.device | str) -> Iterator[Batch]:
    """One pass over ``data``: shuffled batches of a Dataset, or the iterable's own batches."""
    if isinstance(data, Dataset):
        yield from batches(data, batch_size, generator, device)
    else:
        for batch in data:
            yield unpack(batch, device)


def num_batches(data: Dataset | Iterable, batch_size: int) -> int | None:
    """Batches per pass, where known."""
    if isinstance(data, Dataset):
        return -(-len(data) // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def num_samples(data: Dataset | Iterable) -> int | None:
    """Samples per pass, where known (a Dataset, or a DataLoader over a sized dataset)."""
    if isinstance(data, Dataset):
        return len(data)
    try:
        return len(data.dataset)
    except (AttributeError, TypeError):
        return None


def first_batch(data: Dataset | Iterable, device: torch.device | str) -> Batch:
    """The first batch of a pass (in order for a Dataset)."""
    for batch in iterate(data, 256, None, device):
        return batch
    raise BeyondBPError("the training data holds no batch")


def tokens(data: Dataset | Iterable, device: torch.device | str) -> int | None:
    """Tokens per sample where the targets are classes per token (``[batch, T]`` integers), else None."""
    if isinstance(data, Dataset):
        return data.tokens
    _, t, _ = first_batch(data, device)
    return t.shape[1] if not t.is_floating_point() and t.dim() == 2 else None


def _hint(error: Exception, x: torch.Tensor) -> str:
    """What a model's failure on token ids, or on numbers where it embeds ids, most likely means."""
    if isinstance(error, IndexError) and not x.is_floating_point():
        return f" (token ids go up to {int(x.max())}: an embedding needs {int(x.max()) + 1} rows)"
    if x.is_floating_point() and "'indices'" in str(error):
        return " (the model embeds token ids; these samples are numbers: a text corpus with --context gives ids)"
    return ""


def num_outputs(data: Dataset | Iterable, model: nn.Module, device: torch.device | str) -> int:
    """The number of outputs, checked once against the model before training: the Dataset's target width must
    be the model's output width on the first samples (for an iterable, that width is the number); for targets
    per token (``[batch, T]`` class indices) the output must be ``[batch, T, classes]``."""
    x, t, _ = first_batch(data, device)
    was_training = model.training
    name = type(model).__name__
    model.eval()  # no running statistics updated by this look
    try:
        with torch.no_grad():
            y = model(x[:2])
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise BeyondBPError(f"the model ({name}) fails on the data's first samples ({x.dtype} of shape "
                            f"{tuple(x[:2].shape)}): {str(error).splitlines()[0]}{_hint(error, x)}") from None
    finally:
        model.train(was_training)
    needed = data.num_outputs if isinstance(data, Dataset) else None
    if not t.is_floating_point() and t.dim() == 2:
        expected = (len(x[:2]), t.shape[1], needed or "classes")
        if y.dim() != 3 or y.shape[1] != t.shape[1] or (needed is not None and y.shape[2] != needed):
            raise BeyondBPError(f"the model ({name}) returns outputs of shape {tuple(y.shape)} for {len(x[:2])} "
                                f"samples; targets per token need [batch, tokens, classes] = "
                                f"[{', '.join(map(str, expected))}]" + (" (the token axes differ)"
                                                                        if y.dim() == 3 and y.shape[1] != t.shape[1]
                                                                        else ""))
        return y.shape[2]
    if y.dim() != 2 or (needed is not None and y.shape[1] != needed):
        raise BeyondBPError(f"the model ({name}) returns outputs of shape {tuple(y.shape)} for "
                            f"{len(x[:2])} samples; the data needs [batch, {needed or 'outputs'}]"
                            + (f" ({needed} classes or targets)" if needed else ""))
    return y.shape[1]
