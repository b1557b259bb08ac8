"""The training loop shared by every method and every execution.

Each step: ``optimizer.zero_grad()``, ``method.step(...)`` fills ``p.grad``,
``optimizer.step()``. After each epoch: evaluation, one line appended to
``OUT/metrics.jsonl``, an atomic checkpoint ``OUT/checkpoint.pt``. ``resume=True``
continues from the checkpoint and gives the same result as an uninterrupted run (the
shuffle of epoch ``e`` depends only on the seed and ``e``). What differs between one process,
data-parallel ranks and pipeline stages is an :class:`~beyondbp.executor.Executor`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .bn_statistics import batch_norms
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .data import Dataset, loaders
from .data.augment import CropFlip
from .distributed import DataParallel
from .energy import DEFAULT_WATTS_PER_CORE, EnergyMeter
from .errors import BeyondBPError, DivergenceError
from .executor import Executor
from .lr_schedule import ScheduleOptions
from .memory import peak_bytes
from .methods import Method
from .models.outputs import ensure_output
from .objectives import Objective
from .optim import PRECISIONS
from .options import setting
from .schedule import ParametrizationSchedule
from .streams import AUGMENT, BN_STATISTICS, epoch_generator
from .tracking import RunLogger, epoch_scalars

#: The autocast type of each reduced precision.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

METRICS_NAME = "metrics.jsonl"
#: Size of the fixed batch on which ``align_every`` measures alignment.
ALIGN_BATCH = 256
#: The training step whose gradient estimate's peak memory a run records as ``step_memory_mb`` (the first
#: epoch's second step, after the first step's one-time allocations; the first in an epoch of one batch). Only
#: that step runs under the profiler.
MEMORY_STEP = 2


class TrainingWarning(UserWarning):
    """Training went on but looks wrong (e.g. the loss rose far above its start)."""


def changed_settings(stored: dict[str, Any], current: dict[str, Any],
                     upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[str]:
    """The names of the settings (``RunConfig.run_info``) whose values differ, sorted. With ``upgrade`` (e.g.
    :func:`beyondbp.config.upgrade_settings`) both sides are first brought to today's form, and a setting that
    both leave out on purpose (a search's ``lr``) is not compared."""
    old, new = (upgrade(stored), upgrade(current)) if upgrade is not None else (stored, current)
    keys = {k for k in set(old) | set(new) if upgrade is None or k in stored or k in current}
    return sorted(k for k in keys if old.get(k) != new.get(k))


def resumable_checkpoint(path: Path | None, device: torch.device, run_info: dict[str, Any],
                         upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one (None otherwise), refused if made with other settings."""
    if path is None or not path.exists():
        return None
    state = load_checkpoint(path, device)
    changed = changed_settings(state["run_info"], run_info, upgrade)
    if changed:
        raise BeyondBPError(f"cannot resume from {path}: it was made with other settings ({', '.join(changed)})")
    return state


def checked_precision(precision: str, method: Method) -> str:
    """``precision``, refused where ``method`` cannot train under it."""
    if precision not in PRECISIONS:
        raise BeyondBPError(f"unknown precision '{precision}'; known: {', '.join(PRECISIONS)}")
    if precision != "fp32" and not method.supports_autocast:
        raise BeyondBPError(f"{method.label} does not run under {precision} autocast yet; use precision fp32")
    if precision == "fp16" and not method.supports_loss_scaling:
        raise BeyondBPError(f"{method.label} fills gradients that do not all come from backpropagating the loss, "
                            f"so fp16's loss scaling cannot protect them from underflow; use precision bf16 or fp32")
    return precision


class Trainer:
    """Trains ``model`` with any :class:`~beyondbp.methods.Method` and any ``torch.optim`` optimizer.

    Args:
        task: ``"classification"`` or ``"regression"`` (chooses the metrics).
        target_scale: per-output scale that turns standardised regression errors into original units.
        out_dir: where metrics and checkpoints go; None keeps everything in memory.
        run_info: settings stored in the checkpoint; resuming with different ones is refused.
        lowrank: a :class:`~beyondbp.schedule.ParametrizationSchedule` (OIALR, AB-training), called after
            every optimizer step and at the end of every epoch; it must accept the method.
        parallel: data-parallel training (see :mod:`beyondbp.distributed`): ``batch_size`` is per rank,
            gradients are averaged over ranks, only rank 0 writes files.
        watts_per_core: the energy estimate's rated power per busy core where RAPL is not readable (see
            :mod:`beyondbp.energy`); every epoch's record holds ``train_joules`` (cumulative, training only,
            like ``train_seconds``) and ``energy_source``.
        logger: a :class:`~beyondbp.tracking.RunLogger` (TensorBoard, or your own) given every step's loss,
            every epoch's record and, at the end, ``run_info`` with the final metrics; only rank 0 uses it.
        upgrade_settings: brings a checkpoint's stored ``run_info`` to today's form before it is compared
            with ``run_info`` (:func:`beyondbp.config.upgrade_settings` for runs of a ``RunConfig``).
        executor: how steps run and state is gathered (:mod:`beyondbp.executor`); by default in this process,
            as a rank of ``parallel`` if given. ``optimizer`` may be None when the executor makes it (a
            pipeline stage optimizes only its own blocks).
        schedule: the learning rate's schedule (:class:`~beyondbp.lr_schedule.ScheduleOptions`), stepped after
            every optimizer step and kept in the checkpoint.
        clip_grad_norm: the most each step's gradient's global norm may be (scaled down above it).
        augmentation: applied to each training batch with the epoch's generator
            (:mod:`beyondbp.data.augment`).
        precision: ``"bf16"`` runs each step's gradient estimate under bfloat16 autocast (``torch.autocast``);
            parameters, their gradients, the optimizer and the evaluation stay float32. ``"fp16"`` uses float16
            autocast with dynamic loss scaling (``torch.amp.GradScaler``: the loss is multiplied by a scale
            before backward, the gradients divided by it, and a step whose gradients overflow is skipped
            and the scale halved), for methods whose gradients all come from backpropagating the loss.
        compile: run the method's steps on ``torch.compile(model)`` (same parameters; evaluation and
            checkpoints use the model itself), for methods that declare ``supports_compile``.
        recompute_bn: at the end of every epoch that is evaluated (and of the last), before the evaluation
            and the checkpoint, the batch norms' running statistics are recomputed from this many training
            batches at the current weights (:mod:`beyondbp.bn_statistics`); 0 keeps the running averages.
        eval_every: ``eval_set`` is evaluated after every N-th epoch and after the last; the other epochs'
            records have no test metrics.
        step_memory: record ``step_memory_mb`` in the first epoch's record (:data:`MEMORY_STEP`); on a CPU the
            profiler this takes adds a few seconds to the first epoch, so a timing of the loop turns it off.
    """

    def __init__(self, model: nn.Module, method: Method, optimizer: torch.optim.Optimizer | None,
                 objective: Objective, task: str = "classification", target_scale: Tensor | None = None,
                 device: torch.device | str = "cpu", out_dir: Path | str | None = None,
                 progress: bool = True, run_info: dict[str, Any] | None = None,
                 lowrank: ParametrizationSchedule | None = None,
                 parallel: DataParallel | None = None, watts_per_core: float = DEFAULT_WATTS_PER_CORE,
                 logger: RunLogger | None = None,
                 upgrade_settings: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 executor: Executor | None = None, schedule: ScheduleOptions | None = None,
                 clip_grad_norm: float | None = None, augmentation: CropFlip | None = None,
                 precision: str = "fp32", compile: bool = False, recompute_bn: int = 0,
                 eval_every: int = 1, step_memory: bool = True):
        self.model = ensure_output(model).to(device)
        self.method = method
        self.optimizer = optimizer
        self.objective = objective
        self.task = task
        self.target_scale = target_scale
        self.device = torch.device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.run_info = run_info or {}
        self.upgrade_settings = upgrade_settings
        if lowrank is not None:
            lowrank.check_method(method)
        self.lowrank = lowrank
        if executor is not None and parallel is not None:
            raise BeyondBPError("give the Trainer either parallel or an executor, not both")
        self.executor = executor if executor is not None else Executor(parallel)
        self.writes = self.executor.writes
        self.schedule, self.scheduler = schedule, None
        self.clip_grad_norm, self.augmentation = clip_grad_norm, augmentation
        self.precision = checked_precision(precision, method)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        if compile and not method.supports_compile:
            raise BeyondBPError(f"{method.label} cannot run compiled: its step uses hooks or products of its own "
                                f"that torch.compile would not see; leave out compile")
        self.step_model = torch.compile(self.model) if compile else self.model
        if recompute_bn and not batch_norms(self.model):
            raise BeyondBPError(f"{setting('recompute_bn')} recomputes batch-norm statistics, but "
                                f"{type(self.model).__name__} has no batch norm that keeps running statistics: "
                                f"leave it at 0")
        self.recompute_bn = recompute_bn
        if eval_every < 1:
            raise BeyondBPError(f"eval_every must be at least 1, got {eval_every}")
        self.eval_every = eval_every
        self.history: list[dict[str, Any]] = []
        self._first_step_loss: float | None = None
        self._step_memory: int | None = None
        self.measures_step_memory = step_memory and self.executor.measures_step_memory
        self.watts_per_core = watts_per_core
        self.logger = logger if self.writes else None
        self._logged_steps = 0

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir else None

    def fit(self, train: Dataset | Iterable, epochs: int, eval_set: Dataset | Iterable | None = None,
            batch_size: int = 50, seed: int = 0, resume: bool = False, align_every: int = 0,
            num_outputs: int | None = None, num_samples: int | None = None) -> list[dict[str, Any]]:
        """Train for ``epochs`` epochs in total (counting those already in a resumed checkpoint).

        ``train`` and ``eval_set`` are in-memory :class:`~beyondbp.data.Dataset` objects (shuffled by
        ``seed`` and the epoch, ``batch_size`` at a time) or any iterable of ``(x, t)`` or
        ``(x, t, index)`` batches such as a ``DataLoader`` (iterated once per epoch in its own order;
        resuming reproduces the uninterrupted run when that order depends only on the epoch).
        ``num_outputs`` defaults to the targets' width or the model's output width,
        ``num_samples`` to the data's length. ``align_every=N`` adds an ``alignment`` entry (see
        :func:`~beyondbp.diagnostics.alignment`) to every N-th epoch's record, measured on a fixed
        batch: the first ``ALIGN_BATCH`` training samples (the first batch of an iterable).
        """
        steps = self._start(train, epochs, batch_size, resume, num_outputs, num_samples)
        self._memory_step = min(MEMORY_STEP, steps) if steps else MEMORY_STEP
        bar = tqdm(total=epochs * steps if steps else None, initial=len(self.history) * (steps or 0),
                   desc=self.executor.describe(self.method.label), disable=None if self.progress else True,
                   dynamic_ncols=True, leave=False)
        train_seconds = self.history[-1]["train_seconds"] if self.history else 0.0
        train_joules = self.history[-1].get("train_joules", 0.0) if self.history else 0.0
        meter = EnergyMeter(self.device, self.watts_per_core)
        self._logged_steps = len(self.history) * (steps or 0)
        with bar:
            for epoch in range(len(self.history) + 1, epochs + 1):
                started, joules = time.perf_counter(), meter.joules()
                train_loss, lowrank_events = self._train_epoch(train, batch_size, seed, epoch, bar)
                cost = self.executor.epoch_cost(self, time.perf_counter() - started, meter.joules() - joules,
                                                meter.source)
                train_seconds += cost.pop("seconds")
                train_joules += cost.pop("joules")
                record = {"epoch": epoch, "train_loss": train_loss, "train_seconds": train_seconds,
                          "train_joules": train_joules, **cost}
                if self.scheduler is not None:
                    record["lr"] = self.optimizer.param_groups[0]["lr"]
                due = epoch % self.eval_every == 0 or epoch == epochs
                if self.recompute_bn and due:
                    self.executor.recompute_bn(self, train, batch_size, epoch_generator(seed, epoch, BN_STATISTICS))
                self._end_epoch(record, lowrank_events, train, eval_set if due else None, align_every)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.startswith("test_")})
        if self.logger is not None and self.history:
            final = {k: v for k, v in self.history[-1].items() if k.startswith("test_") and isinstance(v, float)}
            self.logger.hyperparameters(self.run_info, final)
            self.logger.close()
        return self.history

    def _start(self, train: Dataset | Iterable, epochs: int, batch_size: int, resume: bool,
               num_outputs: int | None, num_samples: int | None) -> int | None:
        """Attach the method, prepare the execution and the schedule, restore a checkpoint; the number of
        batches per epoch (None for data without a length)."""
        if epochs < 1 or batch_size < 1:
            raise BeyondBPError(f"epochs and batch size must be at least 1, got {epochs} and {batch_size}")
        num_outputs = num_outputs or loaders.num_outputs(train, self.model, self.device)
        num_samples = num_samples or loaders.num_samples(train)
        self.method.attach(self.model, num_outputs=num_outputs, num_samples=num_samples, task=self.task,
                           tokens=loaders.tokens(train, self.device) if self.task == "lm" else None)
        self.executor.prepare(self, train)
        if self.clip_grad_norm is not None and getattr(self.method, "after_block", None) is not None:
            raise BeyondBPError("gradient clipping scales the whole step's gradient, but here each block steps as "
                                "soon as its own exists (unlocked updates, stages): leave clip_grad_norm unset")
        steps = self.executor.num_batches(train, batch_size)
        if self.schedule is not None:
            self.scheduler = self.schedule.scheduler(self.optimizer, epochs, steps)
            self._planned_epochs = epochs
        if self.out_dir and self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.history = self._restore() if resume else []
        if len(self.history) > epochs:
            raise BeyondBPError(f"cannot resume: {self.checkpoint_path} already holds {len(self.history)} epochs, "
                                f"more than the {epochs} asked for")
        self.executor.begin(self)
        if self.out_dir and self.writes:
            self._rewrite_metrics()
        return steps

    def _end_epoch(self, record: dict[str, Any], lowrank_events: list, train: Dataset | Iterable,
                   eval_set: Dataset | Iterable | None, align_every: int) -> None:
        """Complete the epoch's record (health, low rank, communication, evaluation, alignment), then keep it:
        history, ``metrics.jsonl``, the checkpoint and the logger."""
        epoch = record["epoch"]
        if epoch == 1:
            record["first_step_loss"] = self._first_step_loss
            if self._step_memory is not None:
                record["step_memory_mb"] = self._step_memory / 2 ** 20
        self._check_health(record, epoch)
        if self.lowrank is not None:
            record.update({self.lowrank.name: lowrank_events, **self.lowrank.report(self.model)})
        record.update(self.executor.epoch_report())
        if eval_set is not None:
            record.update(self.executor.evaluate(self, eval_set))
        if align_every and epoch % align_every == 0:
            record["alignment"] = self._alignment(train)
        previous = self.history[-1] if self.history else None
        self.history.append(record)
        if self.out_dir:
            parts = self.executor.checkpoint(self)  # every process takes part; one writes
            if self.writes:
                self._append_metrics(record)
                self._save(parts)
        if self.logger is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            self.logger.scalars(epoch_scalars(record, lr, previous), epoch)

    def _train_epoch(self, train: Dataset | Iterable, batch_size: int, seed: int, epoch: int,
                     bar: tqdm) -> tuple[float | None, list]:
        """One epoch of steps; the mean training loss (None in a process that computes no loss: a pipeline
        stage before the last) and the low-rank schedule's events."""
        self.model.train()
        total, count, lowrank_events = 0.0, 0, []
        augment = None
        if self.augmentation is not None:
            generator = epoch_generator(seed, epoch, AUGMENT)
            augment = lambda x: self.augmentation(x, generator)
        batches = self.executor.batches(train, batch_size, epoch_generator(seed, epoch), self.device, augment)
        for number, (x, t, index) in enumerate(batches, start=1):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:  # the current scale, as a tensor on the device (no synchronisation)
                self.method.loss_scale = self.scaler.scale(torch.ones((), device=self.device))
            with torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES.get(self.precision, torch.float32),
                                enabled=self.precision != "fp32"):
                if epoch == 1 and number == self._memory_step and self.measures_step_memory:
                    loss, self._step_memory = peak_bytes(lambda: self.executor.gradients(self, x, t, index),
                                                         self.device)
                else:
                    loss = self.executor.gradients(self, x, t, index)
            if loss is not None:
                if epoch == 1 and number == 1:
                    self._first_step_loss = loss
                loss = self._update(loss, len(x), epoch, number, lowrank_events)
                total += loss * len(x)
                count += len(x)
                bar.update()
            if self.scheduler is not None:
                self.scheduler.step()
        self.executor.end_steps(self)
        if self.lowrank is not None:
            event = self.lowrank.end_epoch(self.model, self.optimizer)
            if event is not None:
                lowrank_events.append(event)
        return (total / count if count else None), lowrank_events

    def _update(self, loss: float, local_count: int, epoch: int, number: int, lowrank_events: list) -> float:
        """The step once this process's gradients exist: combined over processes, checked, clipped, taken;
        returns the loss averaged over processes."""
        loss = self.executor.combine(self, loss, local_count)
        if not math.isfinite(loss):
            raise DivergenceError(self._divergence_message(loss, epoch, number))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None],
                                           self.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped where the gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.lowrank is not None:
            event = self.lowrank.after_step(self.model, self.optimizer)
            if event is not None:
                lowrank_events.append(event)
        self._logged_steps += 1
        if self.logger is not None:
            self.logger.scalars({"step/train_loss": loss}, self._logged_steps)
        return loss

    def _alignment(self, train: Dataset | Iterable) -> dict[str, Any]:
        from .diagnostics import alignment

        if isinstance(train, Dataset):
            n = min(ALIGN_BATCH, len(train))
            x, t, index = train.x[:n].to(self.device), train.t[:n].to(self.device), torch.arange(n, device=self.device)
        else:
            x, t, index = loaders.first_batch(train, self.device)
        return alignment(self.model, self.method, x, t, index, self.objective)

    def step_segment(self, params: list[nn.Parameter]) -> None:
        """Unlocked updates: step the one segment that holds a gradient, then clear it.

        Optimizers skip parameters whose ``.grad`` is None, so only this segment moves.
        """
        self.optimizer.step()
        for p in params:
            p.grad = None

    def _check_health(self, record: dict[str, Any], epoch: int) -> None:
        """Stop on non-finite parameters (the last good checkpoint stays); warn when the epoch's training loss
        ends at more than twice the first step's, a sign of a learning rate too large (bounded losses such
        as BCE saturate instead of overflowing)."""
        bad = self._nonfinite_parameter()
        if bad:
            raise DivergenceError(self._divergence_message(f"finite, but parameter {bad} is not", epoch, "end"))
        reference = self.history[0].get("first_step_loss") if self.history else record.get("first_step_loss")
        if reference and record["train_loss"] is not None and record["train_loss"] > 2 * reference:
            lr = self.optimizer.param_groups[0]["lr"]
            warnings.warn(f"epoch {epoch}: training loss {record['train_loss']:.4g} ended at more than twice the "
                          f"first step's ({reference:.4g}); the learning rate {lr:g} may be too large",
                          TrainingWarning, stacklevel=3)

    def _nonfinite_parameter(self) -> str | None:
        """The name of the first parameter holding a NaN or an infinity, if any."""
        return next((name for name, p in self.model.named_parameters()
                     if not p.is_meta and not torch.isfinite(p).all()), None)

    def _divergence_message(self, loss: float | str, epoch: int, batch: int | str) -> str:
        kept = (f"last good checkpoint kept: {self.checkpoint_path} (epoch {len(self.history)})"
                if self.checkpoint_path and self.history else "no checkpoint was written yet")
        bad = self._nonfinite_parameter() if isinstance(loss, float) else None  # a str loss names it already
        cause = f"; parameter {bad} is no longer finite (a step's gradient estimate overflowed)" if bad else ""
        return (f"training diverged: loss is {loss} at epoch {epoch}, batch {batch} ({self.method.label}){cause}; "
                f"{kept}; try a smaller learning rate")

    def _save(self, parts: dict[str, Any]) -> None:
        """The checkpoint: the executor's ``parts`` (model and optimizer) and what every execution keeps."""
        save_checkpoint({
            "run_info": self.run_info,
            "history": self.history,
            **parts,
            "method": self.method.state_dict(),
            "lowrank": self.lowrank.state_dict(self.model) if self.lowrank is not None else None,
            "lr_schedule": ({**self.scheduler.state_dict(), "planned_epochs": self._planned_epochs}
                            if self.scheduler is not None else None),
            "loss_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }, self.checkpoint_path)

    def _restore(self) -> list[dict[str, Any]]:
        state = resumable_checkpoint(self.checkpoint_path, self.device, self.run_info, self.upgrade_settings)
        if state is None:
            return []
        if self.lowrank is not None:
            self.lowrank.prepare_to_load(self.model, state["lowrank"])
        self.executor.restore(self, state, self.checkpoint_path)
        if self.scheduler is not None:
            schedule = dict(state.get("lr_schedule") or {})
            if schedule.pop("planned_epochs", None) != self._planned_epochs:
                raise BeyondBPError(f"cannot resume from {self.checkpoint_path}: its learning-rate schedule was "
                                    f"planned for another number of epochs (or none); resume with the same epochs")
            self.scheduler.load_state_dict(schedule)
        self.method.load_state_dict(state["method"])
        if self.scaler is not None and state.get("loss_scaler"):
            self.scaler.load_state_dict(state["loss_scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        return state["history"]

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _rewrite_metrics(self) -> None:
        with open(self.out_dir / METRICS_NAME, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)
