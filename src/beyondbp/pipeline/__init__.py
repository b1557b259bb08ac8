"""Layer-parallel training: stages of blocks on separate processes (see :mod:`.stage`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data import DataSplit
from ..distributed import TIMEOUT, leave_process_group
from ..errors import BeyondBPError
from .split import BALANCES, contiguous_split
from .stage import PIPELINE_METHODS, StageTrainer, check_method

__all__ = ["BALANCES", "PIPELINE_METHODS", "StageTrainer", "check_method", "check_stages", "contiguous_split",
           "train_stages"]


def check_stages(config, data: DataSplit) -> None:
    """Before any process starts: the model must be a sequence of at least ``config.stages`` blocks."""
    from ..experiment import build_run

    model, method, _, _ = build_run(config, data, torch.device("cpu"))
    method = check_method(method)
    method.attach(model, num_outputs=data.train.num_outputs, num_samples=len(data.train), task=data.task)
    if method.sequence is None:
        raise BeyondBPError(f"stages need a model that is an nn.Sequential cut at its children (one block per "
                            f"child); {type(model).__name__} with feedback points {method.points.names} is not")
    count = len(method.sequence[0]) + 1
    if config.stages > count:
        raise BeyondBPError(f"cannot cut {count} blocks into {config.stages} stages: every stage needs at least "
                            f"one block")


def train_stages(config, device: torch.device, out_dir: Path | str | None, resume: bool, progress: bool,
                 data: DataSplit) -> dict[str, Any]:
    """This process's stage of ``config`` (launched by torchrun with ``config.stages`` processes); the last
    stage writes and returns the summary, the others return ``{}``. Every stage leaves the process group
    together at the end."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    completed = False
    try:
        summary = _train_stage(config, device, out_dir, resume, progress, data)
        completed = True
    finally:
        leave_process_group(completed)
    return summary


def _train_stage(config, device: torch.device, out_dir: Path | str | None, resume: bool, progress: bool,
                 data: DataSplit) -> dict[str, Any]:
    from ..experiment import OPTIMIZERS, SUMMARY_NAME, build_run, parameter_groups, summarize

    if dist.get_world_size() != config.stages:
        raise BeyondBPError(f"this run was launched on {dist.get_world_size()} processes but its settings say "
                            f"stages {config.stages}: set stages={dist.get_world_size()}")
    model, method, _, objective = build_run(config, data, device)
    make_optimizer = lambda params: OPTIMIZERS.get(config.optimizer)(parameter_groups(config, model, params),
                                                                     config.lr, config.momentum)
    out = Path(out_dir) if out_dir is not None else None
    stage = StageTrainer(model, method, make_optimizer, objective, data, device, out, config.run_info(),
                         balance=config.balance, progress=progress, watts_per_core=config.watts_per_core)
    history = stage.fit(config.epochs, config.batch_size, config.seed, resume)
    if stage.rank != stage.last:
        return {}
    summary = summarize(config, method, objective.name, data, history)
    summary.update(stages=history[-1]["stages"], samples_per_second=history[-1]["samples_per_second"],
                   split=stage.split_text)
    if out is not None:
        (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
