"""Executing one run from plain settings: what ``beyondbp train`` and ``compare`` run.

:func:`run` validates a :class:`~beyondbp.config.RunConfig`, then executes it in one of three ways, each a
:class:`~beyondbp.train.Trainer` over what :mod:`beyondbp.build` builds: here (one process, or one rank of a
launched data-parallel run), on N processes launched with torchrun (:mod:`beyondbp.launch`), or as one
stage of a layer-parallel run (:mod:`beyondbp.pipeline`). It writes ``summary.json`` next to the metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .build import SUMMARY_NAME, build_run, summarize
from .config import RunConfig, upgrade_settings
from .data import DataSplit, validation_split
from .distributed import (
    TIMEOUT,
    DataParallel,
    from_environment,
    launched_device,
    launched_rank,
    launched_world,
    leave_process_group,
)
from .errors import BeyondBPError
from .execution import resolve_device
from .folders import output_folder
from .launch import launch
from .methods import Method
from .options import setting
from .pipeline import StageExecutor, check_sequence
from .plots import plot_alignment, plot_ranks
from .tracking import FanOut, RunLogger, make_logger
from .train import Trainer

__all__ = ["SUMMARY_NAME", "RunConfig", "run"]


def run(config: RunConfig, out_dir: Path | str | None = None, resume: bool = False, progress: bool = True,
        data: DataSplit | None = None, align_every: int = 0,
        validation: tuple[float, int] | None = None, logger: RunLogger | None = None) -> dict[str, Any]:
    """Train one run and return its summary (also written to ``out_dir/summary.json``).

    ``align_every=N`` measures alignment with backprop every N epochs (into ``metrics.jsonl``)
    and plots it to ``out_dir/alignment.png``. ``validation=(fraction, seed)`` trains on the
    training set minus a held-out split and evaluates on that split. ``logger`` (a
    :class:`~beyondbp.tracking.RunLogger`) receives the run's steps and epochs besides ``config.log``'s.
    ``config.nproc > 1`` or ``config.stages > 1`` launches the run on that many processes
    (:func:`beyondbp.launch.launch`; ``data`` is then loaded by each process).
    """
    method = config.validate()
    if out_dir is not None:
        output_folder(out_dir, "out_dir")
    launched = launched_world() is not None
    if config.stages > 1:
        if align_every:
            raise BeyondBPError("alignment is measured against backprop on the whole model, which no stage holds: "
                                "leave align_every at 0 with stages")
        if config.log is not None:
            raise BeyondBPError(f"{setting('log', config.log)} does not follow runs with stages yet; read "
                                f"OUT/metrics.jsonl")
    if (config.nproc > 1 or config.stages > 1) and not launched:
        if logger is not None:
            raise BeyondBPError("a logger object cannot follow a run on several processes; use config.log")
        if config.stages > 1:
            check_stages(config, method, with_validation(data or config.data_options().load(), validation))
        return launch(config, out_dir, resume, progress, align_every, validation)
    if data is None:
        data = config.data_options().load()
        if launched_rank() == 0:  # where the data came from, whatever the progress display
            print(f"beyondbp: {config.data_options().origin(data)}", file=sys.stderr)
    device = launched_device(resolve_device(config.device))
    data = config.execution_options().place(with_validation(data, validation), device)
    if config.stages > 1:
        return train_stage(config, method, device, out_dir, resume, progress, data)
    parallel = from_environment(device)
    completed = False
    try:
        summary = train_here(config, method, device, parallel, out_dir, resume, progress, data, align_every, logger)
        completed = True
    finally:
        if parallel is not None:
            parallel.close(completed)
    return summary


def with_validation(data: DataSplit, validation: tuple[float, int] | None) -> DataSplit:
    return validation_split(data, *validation) if validation is not None else data


def train_here(config: RunConfig, method: Method, device: torch.device, parallel: DataParallel | None,
               out_dir: Path | str | None, resume: bool, progress: bool, data: DataSplit, align_every: int,
               logger: RunLogger | None = None) -> dict[str, Any]:
    """The run in this process (one rank of a data-parallel run, or the only one)."""
    if parallel is not None and parallel.world != config.nproc:
        raise BeyondBPError(f"this run was launched on {parallel.world} processes but its settings say nproc "
                            f"{config.nproc}: set {setting('nproc', parallel.world)}")
    model, method, optimizer, objective = build_run(config, data, device, method)
    if config.log is not None and (parallel is None or parallel.is_main):
        if out_dir is None:
            raise BeyondBPError(f"{setting('log', config.log)} needs an output folder (out_dir, --out)")
        logger = FanOut(make_logger(config.log, out_dir), *([logger] if logger is not None else []))
    trainer = Trainer(model, method, optimizer, objective, task=data.task,
                      target_scale=data.target_scale, device=device, out_dir=out_dir,
                      progress=progress and (parallel is None or parallel.is_main), run_info=config.run_info(),
                      lowrank=config.lowrank_options().schedule(parallel), parallel=parallel,
                      watts_per_core=config.watts_per_core, logger=logger, upgrade_settings=upgrade_settings,
                      **recipe(config, data))
    history = trainer.fit(data.train, config.epochs, eval_set=data.test, batch_size=config.batch_size,
                          seed=config.seed, resume=resume, align_every=align_every)
    summary = summarize(config, method, objective.name, data, history)
    if parallel is not None:
        summary.update(world_size=parallel.world, comm_bytes_per_step=parallel.comm_bytes_per_step())
        if not parallel.is_main:
            return summary
    if out_dir is not None:
        write_outputs(config, method, data, history, summary, Path(out_dir))
    return summary


def recipe(config: RunConfig, data: DataSplit) -> dict[str, Any]:
    """The Trainer's recipe arguments: the learning-rate schedule, gradient clipping, augmentation, precision,
    compilation, batch-norm statistics, how often to evaluate."""
    return {"schedule": config.schedule_options(), "clip_grad_norm": config.clip_grad_norm,
            "recompute_bn": config.recompute_bn, "eval_every": config.eval_every,
            "augmentation": config.data_options().augmentation(data), "precision": config.precision,
            "compile": config.compile}


def write_outputs(config: RunConfig, method: Method, data: DataSplit, history: list[dict[str, Any]],
                  summary: dict[str, Any], out: Path) -> None:
    """``summary.json``, and the alignment and rank plots of runs that measured them."""
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    measured = [r for r in history if "alignment" in r]
    if measured:
        plot_alignment(measured, out / "alignment.png", title=f"{method.label} on {data.name}")
    events = [event for r in history for event in r.get(config.lowrank or "", [])]
    if config.lowrank == "oialr" and events:
        plot_ranks(events, out / "ranks.png", title=f"OIALR ranks: {method.label} on {data.name}")


def check_stages(config: RunConfig, method: Method, data: DataSplit) -> None:
    """Before any process starts: the model must be a sequence of at least ``config.stages`` blocks."""
    model, method, _, _ = build_run(config, data, torch.device("cpu"), method)
    method.attach(model, num_outputs=data.train.num_outputs, num_samples=len(data.train), task=data.task,
                  tokens=data.train.tokens)
    count = len(check_sequence(method, model)[0]) + 1
    if config.stages > count:
        raise BeyondBPError(f"cannot cut {count} blocks into {config.stages} stages: every stage needs at least "
                            f"one block")


def train_stage(config: RunConfig, method: Method, device: torch.device, out_dir: Path | str | None, resume: bool,
                progress: bool, data: DataSplit) -> dict[str, Any]:
    """This process's stage of ``config`` (launched by torchrun with ``config.stages`` processes); the last
    stage writes and returns the summary, the others return ``{}``. Every stage leaves the process group
    together at the end."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    completed = False
    try:
        if dist.get_world_size() != config.stages:
            raise BeyondBPError(f"this run was launched on {dist.get_world_size()} processes but its settings say "
                                f"stages {config.stages}: set {setting('stages', dist.get_world_size())}")
        model, method, _, objective = build_run(config, data, device, method)
        training = config.training_options()
        stage = StageExecutor(lambda params: training.optimizer_for(model, params), balance=config.balance,
                              announce=progress)
        trainer = Trainer(model, method, None, objective, task=data.task, target_scale=data.target_scale,
                          device=device, out_dir=out_dir, progress=progress and stage.writes,
                          run_info=config.run_info(), watts_per_core=config.watts_per_core,
                          upgrade_settings=upgrade_settings, executor=stage, **recipe(config, data))
        history = trainer.fit(data.train, config.epochs, eval_set=data.test, batch_size=config.batch_size,
                              seed=config.seed, resume=resume)
        summary = {}
        if stage.writes:
            summary = summarize(config, method, objective.name, data, history)
            summary.update(stages=history[-1]["stages"], samples_per_second=history[-1]["samples_per_second"],
                           split=stage.split_text)
            if out_dir is not None:
                (Path(out_dir) / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
        completed = True
    finally:
        leave_process_group(completed)
    return summary
