"""The peak memory a computation allocates beyond what existed before it.

On CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory allocated
before. On CPU, where PyTorch keeps no such counter: the profiler's record of every allocation and free
(``profile_memory=True``), summed in time order; the peak of that running sum. Either way it is the memory of
activations, the autograd graph, temporaries and whatever the computation keeps (e.g. new gradients); the
tensors that existed before it (parameters, optimizer state) are not counted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

T = TypeVar("T")


@contextmanager
def _profiler_chatter_hidden() -> Iterator[None]:
    """The CPU profiler's native code prints start/stop lines on file descriptor 2; hide them."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_bytes(compute: Callable[[], T], device: torch.device) -> tuple[T, int | None]:
    """``compute()``'s result and the peak bytes it allocated on ``device`` beyond what existed before it
    (None on a CPU whose profiler is already running: a caller's own profile)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = compute()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before
    if torch.autograd.profiler._is_profiler_enabled:
        return compute(), None
    with _profiler_chatter_hidden(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = compute()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return result, peak


__all__ = ["peak_bytes"]
