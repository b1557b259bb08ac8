"""Data-parallel training for every method with ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Launched by ``torchrun --nproc-per-node N -m beyondbp train ...`` (or ``beyondbp train
--nproc N``). Every rank holds the whole model and method. Each step takes a global batch
of ``batch_size × world`` samples from the epoch's shuffle (the same on every rank) and
rank ``r`` trains on its slice; after the method has filled ``.grad``, every gradient
estimate is averaged across ranks, weighted by the ranks' sample counts, so that for
methods whose estimate is a mean over the batch (backprop, FA, fg, the output block of
direct feedback) the step equals one process on the concatenated batch. (Direct
feedback's injected hidden gradient is a sum over the batch, so its average is ``1/world``
of that sum; Adam does not see the scale.) F³'s per-sample buffer stays identical on all
ranks: each write is gathered from every rank, so a sample's signal is right whichever
rank sees it next. Only rank 0 writes metrics and checkpoints; every rank resumes from
them. A rank that dies makes the others fail after ``TIMEOUT`` instead of hanging.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import BeyondBPError

TIMEOUT = timedelta(seconds=60)


class DataParallel:
    """The rank's view of a process group: its slice of each global batch and the reductions."""

    def __init__(self, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.bytes_sent = 0  # by this rank, in all collectives
        self.steps = 0  # counted by the trainer

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, global_size: int) -> slice:
        """This rank's share of a global batch: contiguous, sizes differing by at most one."""
        return slice(self.rank * global_size // self.world, (self.rank + 1) * global_size // self.world)

    def all_reduce(self, tensor: Tensor, group=None) -> Tensor:
        """Sum ``tensor`` in place over all ranks (or over ``group``), counting the bytes sent."""
        self.bytes_sent += tensor.numel() * tensor.element_size()
        try:
            dist.all_reduce(tensor, group=group)
        except RuntimeError as error:
            raise BeyondBPError(f"rank {self.rank}: a collective failed (another rank died or timed out after "
                                f"{TIMEOUT.seconds} s): {str(error).splitlines()[0]}") from None
        return tensor

    def average(self, values: Tensor, loss: float, local_count: int, group=None) -> tuple[Tensor, float]:
        """The ranks' ``values`` and losses averaged, weighted by their sample counts: one all-reduce
        of ``len(values) + 2`` numbers over all ranks (or ``group``). A NaN loss on any rank reaches
        every rank, so all stop together."""
        flat = torch.cat([values.reshape(-1) * local_count,
                          torch.tensor([loss * local_count, float(local_count)], device=values.device)])
        self.all_reduce(flat, group)
        total = flat[-1]
        return flat[:-2] / total, (flat[-2] / total).item()

    def average_gradients(self, model: nn.Module, loss: float, local_count: int) -> float:
        """Replace every ``.grad`` by its average over ranks (weighted by sample counts); returns the mean loss."""
        params = [p for p in model.parameters() if p.grad is not None]
        device = params[0].grad.device if params else self.device
        flat = torch.cat([p.grad.reshape(-1) for p in params]) if params else torch.zeros(0, device=device)
        averaged, loss = self.average(flat, loss, local_count)
        for p, g in zip(params, averaged.split([p.grad.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))
        return loss

    def gather_rows(self, index: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Every rank's ``(index, values)`` rows, concatenated (ranks may hold different counts)."""
        count = torch.tensor([len(index)], device=self.device)
        counts = [torch.zeros_like(count) for _ in range(self.world)]
        dist.all_gather(counts, count)
        largest = int(max(c.item() for c in counts))
        padded_index = torch.full((largest,), -1, dtype=index.dtype, device=self.device)
        padded_index[:len(index)] = index
        padded_values = values.new_zeros(largest, *values.shape[1:])
        padded_values[:len(values)] = values
        indices = [torch.empty_like(padded_index) for _ in range(self.world)]
        rows = [torch.empty_like(padded_values) for _ in range(self.world)]
        dist.all_gather(indices, padded_index)
        dist.all_gather(rows, padded_values)
        self.bytes_sent += padded_index.numel() * padded_index.element_size() + padded_values.numel() * 4
        keep = torch.cat(indices) >= 0
        return torch.cat(indices)[keep], torch.cat(rows)[keep]

    def comm_bytes_per_step(self) -> float:
        return self.bytes_sent / max(self.steps, 1)

    def close(self, completed: bool) -> None:
        """Leave the process group (:func:`leave_process_group`)."""
        leave_process_group(completed)


def leave_process_group(completed: bool) -> None:
    """Leave the process group. A rank that completed first waits at a barrier for the others, so that
    none closes its connections while a peer still uses them (gloo aborts a process whose peer vanishes
    mid-exchange, and one that exits with the group still open); a rank that failed leaves at once."""
    if not dist.is_initialized():
        return
    if completed:
        try:
            dist.barrier()
        except RuntimeError:
            pass  # another rank failed: nothing left to wait for
    dist.destroy_process_group()


def launched_world() -> int | None:
    """The number of processes ``torchrun`` launched this one among (None when not launched by it).

    This module is the one place that reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).
    """
    return int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else None


def launched_rank() -> int:
    """This process's rank (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launched_device(device: torch.device) -> torch.device:
    """``device``, made this rank's own GPU (``LOCAL_RANK``) in a launched CUDA run."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def from_environment(device: torch.device) -> DataParallel | None:
    """Join the process group that ``torchrun`` describes in the environment (None when not launched so)."""
    world = launched_world() or 1
    if world <= 1:
        return None
    rank = launched_rank()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return DataParallel(rank, world, device)
