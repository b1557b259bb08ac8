"""The random streams of a run that are functions of the seed and the epoch only.

Each epoch draws from separate generators: the order of the training samples (``SHUFFLE``), the
augmentation's offsets and flips (``AUGMENT``) and the batches that batch-norm statistics are recomputed from
(``BN_STATISTICS``). Keyed by the seed and the epoch alone, a run resumed at any epoch draws what the
uninterrupted run drew, and a stream can be switched on without shifting the others.
"""

from __future__ import annotations

import torch

#: Which stream; each is the others' seed with bits flipped.
SHUFFLE, AUGMENT, BN_STATISTICS = 0, 0x5DEECE66D, 0x2545F491


def epoch_generator(seed: int, epoch: int, stream: int = SHUFFLE) -> torch.Generator:
    """The CPU generator of ``stream`` in epoch ``epoch`` of a run seeded ``seed``."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) ^ stream)
