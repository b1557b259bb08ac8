"""Activations between neighbouring pipeline stages: asynchronous point-to-point sends of
``torch.distributed`` (gloo on CPU, NCCL on GPUs), with the time spent waiting and the bytes sent counted.

A stage sends each batch's output to the next stage with ``isend`` and goes on with the next batch; at
most ``depth`` sends are in flight (the oldest is waited for before another starts), which bounds the
activations a fast stage keeps for a slow one. Receives block: the time a stage waits for its input, and
for its sends to drain, is its idle time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import TIMEOUT
from ..errors import BeyondBPError


class Link:
    """Stage ``rank``'s connections to stages ``rank - 1`` (input) and ``rank + 1`` (output)."""

    def __init__(self, rank: int, world: int, device: torch.device, depth: int = 2):
        self.rank, self.world, self.device, self.depth = rank, world, device, depth
        self.pending: deque[tuple[dist.Work, Tensor]] = deque()
        self.idle_seconds = 0.0
        self.bytes_sent = 0

    def _failed(self, error: RuntimeError) -> BeyondBPError:
        return BeyondBPError(f"stage {self.rank}: another stage died or did not answer within "
                             f"{TIMEOUT.seconds} s ({str(error).splitlines()[0]})")

    def collective(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``operation(*args, **kwargs)`` (a collective of ``torch.distributed``), a peer's failure reported."""
        try:
            return operation(*args, **kwargs)
        except RuntimeError as error:
            raise self._failed(error) from None

    def send(self, h: Tensor) -> None:
        """Start sending ``h`` to the next stage; waits only when ``depth`` sends are still in flight."""
        while len(self.pending) >= self.depth:
            self._wait_oldest()
        h = h.contiguous()
        try:
            self.pending.append((dist.isend(h, self.rank + 1), h))
        except RuntimeError as error:
            raise self._failed(error) from None
        self.bytes_sent += h.numel() * h.element_size()

    def receive(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """The previous stage's next output, of ``shape``."""
        buffer = torch.empty(shape, dtype=dtype, device=self.device)
        started = time.perf_counter()
        try:
            dist.recv(buffer, self.rank - 1)
        except RuntimeError as error:
            raise self._failed(error) from None
        self.idle_seconds += time.perf_counter() - started
        return buffer

    def flush(self) -> None:
        """Wait until every send has been received."""
        while self.pending:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        work, _ = self.pending.popleft()
        started = time.perf_counter()
        try:
            work.wait()
        except RuntimeError as error:
            raise self._failed(error) from None
        self.idle_seconds += time.perf_counter() - started
