"""How the :class:`~beyondbp.train.Trainer` runs its steps and gathers what the run's processes hold.

The trainer owns the epoch (batches, progress, health checks, evaluation, metrics, checkpoints, resume); an
executor decides what differs between executions. This base class runs every step in this process: alone, or
as one rank of data-parallel training (:mod:`beyondbp.distributed`), where each rank takes its slice of the
global batch and gradients are combined over ranks. A pipeline stage (:mod:`beyondbp.pipeline.stage`) is the
same trainer with a :class:`~beyondbp.pipeline.stage.StageExecutor`.

The hooks, in the order the trainer calls them: :meth:`prepare` (once, after the method is attached), then,
after a resume, :meth:`begin`; per epoch :meth:`batches`, per batch :meth:`gradients` and :meth:`combine`,
then :meth:`end_steps` and :meth:`epoch_cost`; :meth:`recompute_bn` (when asked for) and :meth:`evaluate`;
and :meth:`checkpoint` / :meth:`restore` for the parts of a checkpoint that depend on the execution (the
model and the optimizer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .bn_statistics import recompute_bn_statistics
from .data import Dataset, loaders
from .distributed import DataParallel
from .errors import BeyondBPError
from .methods import Method
from .metrics import evaluate
from .objectives import Objective
from .schedule import ParametrizationSchedule

Batch = tuple[Tensor, Tensor, Tensor]


class Trainer(Protocol):
    """What an executor reads of the :class:`~beyondbp.train.Trainer` that calls it (and ``optimizer``, which
    an executor may set in :meth:`Executor.prepare`)."""

    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    objective: Objective
    lowrank: ParametrizationSchedule | None
    task: str
    target_scale: Tensor | None
    device: torch.device
    recompute_bn: int

    def step_segment(self, params: list[nn.Parameter]) -> None: ...


class Executor:
    """Steps in this process; with ``parallel``, as one rank of data-parallel training."""

    #: Whether the trainer measures a step's memory (``step_memory_mb``) around :meth:`gradients`.
    measures_step_memory = True

    def __init__(self, parallel: DataParallel | None = None):
        self.parallel = parallel

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files and logs (one process of the run does)."""
        return self.parallel is None or self.parallel.is_main

    def describe(self, label: str) -> str:
        """The progress bar's title for a method labelled ``label``."""
        return label

    def prepare(self, trainer: Trainer, train: Dataset | Iterable) -> None:
        """After the method is attached: offer it the data-parallel reductions and a per-segment step."""
        if self.parallel is not None and not isinstance(train, Dataset):
            raise BeyondBPError("data-parallel training takes an in-memory Dataset (each rank slices the global "
                                "batch); got " + type(train).__name__)
        trainer.method.connect(self.parallel, trainer.step_segment)

    def begin(self, trainer: Trainer) -> None:
        """After the checkpoint (if any) is restored, before the first epoch."""

    def num_batches(self, train: Dataset | Iterable, batch_size: int) -> int | None:
        return loaders.num_batches(train, batch_size * self.world)

    @property
    def world(self) -> int:
        return self.parallel.world if self.parallel is not None else 1

    def batches(self, train: Dataset | Iterable, batch_size: int, generator: torch.Generator,
                device: torch.device, augment: Callable[[Tensor], Tensor] | None = None) -> Iterator[Batch]:
        """The epoch's batches for this process: a rank's slice of each global batch of ``batch_size`` per rank
        (a last global batch too small to give every rank a sample is left out), augmented (the whole global
        batch, so that every rank's slice is what one process would see) when ``augment`` is given."""
        for x, t, index in loaders.iterate(train, batch_size * self.world, generator, device):
            if augment is not None:
                x = augment(x)
            if self.parallel is None:
                yield x, t, index
            elif len(x) >= self.world:
                part = self.parallel.local_slice(len(x))
                yield x[part], t[part], index[part]

    def gradients(self, trainer: Trainer, x: Tensor, t: Tensor, index: Tensor) -> float | None:
        """Fill ``p.grad`` for this batch; the loss in this process (None where no loss is computed)."""
        return trainer.method.step(trainer.step_model, x, t, index, trainer.objective).loss.item()

    def combine(self, trainer: Trainer, loss: float, local_count: int) -> float:
        """How the ranks' gradients become the step's; returns the loss averaged over ranks. In one process
        they stay as they are; a method that exchanges its own estimates (fg: k directional derivatives) did
        so inside ``step()``; a schedule that trains parts of the model in separate groups (AB-training)
        averages group-wise; everything else is plain data parallelism, every gradient averaged over ranks."""
        if self.parallel is None:
            return loss
        if not trainer.method.exchanges_estimates:
            combined = trainer.lowrank.average_gradients(trainer.model, loss, local_count) if trainer.lowrank else None
            loss = combined if combined is not None else self.parallel.average_gradients(trainer.model, loss,
                                                                                          local_count)
        self.parallel.steps += 1
        return loss

    def end_steps(self, trainer: Trainer) -> None:
        """After the epoch's last step, inside its timed part."""

    def epoch_cost(self, trainer: Trainer, seconds: float, joules: float, source: str) -> dict[str, Any]:
        """The epoch's ``seconds`` and ``joules`` for the whole run (here: this process's), its
        ``energy_source``, and what else the execution reports per epoch."""
        return {"seconds": seconds, "joules": joules, "energy_source": source}

    def epoch_report(self) -> dict[str, Any]:
        """Entries added to each epoch's record after training (data parallel: bytes sent per step)."""
        return {"comm_bytes_per_step": self.parallel.comm_bytes_per_step()} if self.parallel is not None else {}

    def recompute_bn(self, trainer: Trainer, train: Dataset | Iterable, batch_size: int,
                     generator: torch.Generator) -> None:
        """Recompute the batch norms' running statistics from ``trainer.recompute_bn`` training batches of
        ``batch_size`` drawn by ``generator`` (the first ones of an iterable), without augmentation. Every rank
        of data-parallel training draws the same batches, so the ranks' statistics stay equal."""
        batches = loaders.iterate(train, batch_size, generator, trainer.device)
        recompute_bn_statistics(trainer.model, (x for x, _, _ in islice(batches, trainer.recompute_bn)))

    def evaluate(self, trainer: Trainer, eval_set: Dataset | Iterable) -> dict[str, float]:
        return evaluate(trainer.model, eval_set, trainer.objective, trainer.task, trainer.target_scale,
                        device=trainer.device)

    def checkpoint(self, trainer: Trainer) -> dict[str, Any]:
        """The checkpoint's model and optimizer entries (every process calls it; only a writer saves)."""
        return {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()}

    def restore(self, trainer: Trainer, state: dict[str, Any], path: Path) -> None:
        """Load the model and optimizer entries of a checkpoint :meth:`checkpoint` wrote."""
        if "stage_optimizers" in state:
            raise BeyondBPError(f"cannot resume from {path}: it was written by a run with stages")
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
