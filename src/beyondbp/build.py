"""Building a run from its configuration: data, model, method, optimizer and objective.

What builds a run is one floor below what executes it (:mod:`beyondbp.experiment`: here, on data-parallel
ranks, or on pipeline stages); every execution builds through here, so a seed gives the same model,
method and optimizer everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .config import RunConfig, upgrade_settings
from .data import DataSplit
from .data.corpus import characters_per_token
from .errors import BeyondBPError
from .execution import resolve_device
from .methods import Method
from .metrics import HEADLINE
from .objectives import Objective, make_objective

SUMMARY_NAME = "summary.json"


def build_run(config: RunConfig, data: DataSplit, device: torch.device, method: Method | None = None
              ) -> tuple[torch.nn.Module, Method, torch.optim.Optimizer, Objective]:
    """The seeded model (on ``device``), the method (``method`` if already built by
    :meth:`RunConfig.validate`), the optimizer and the objective of a run."""
    objective = make_objective(config.loss, data.task, config.label_smoothing)
    torch.manual_seed(config.seed)
    model = config.model_options().build(data.train.input_shape, data.train.num_outputs,
                                         objective.output_activation()).to(device)
    method = method if method is not None else config.build_method()
    optimizer = config.training_options().optimizer_for(model)
    return model, method, optimizer, objective


def config_from_checkpoint(state: dict[str, Any], **overrides: Any) -> RunConfig:
    """The settings a checkpoint was made with (its ``run_info``, of any schema), plus e.g. ``data_dir``."""
    return RunConfig.from_settings(state["run_info"], epochs=len(state["history"]), **overrides)


def restore_run(run_dir: Path | str, data_dir: str | None = None, device: str = "auto"
                ) -> tuple[dict[str, Any], RunConfig, DataSplit, torch.nn.Module, Method, Objective]:
    """A finished (or stopped) ``beyondbp train`` run from its folder: the checkpoint's state, the settings, the
    data (read again, ``data_dir`` where the files are now), and the model and attached method with their state."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise BeyondBPError(f"no checkpoint at {path}; give the output folder of 'beyondbp train'")
    where = resolve_device(device)
    state = load_checkpoint(path, where)
    config = config_from_checkpoint(state, data_dir=data_dir, device=device)
    data = config.load_data()
    model, method, _, objective = build_run(config, data, where)
    method.attach(model, num_outputs=data.train.num_outputs, num_samples=len(data.train), task=data.task,
                  tokens=data.train.tokens)
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    return state, config, data, model, method, objective


def summarize(config: RunConfig, method: Method, loss: str, data: DataSplit,
              history: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's ``summary.json``: its settings, the last epoch's metrics and the best headline metric of the
    evaluated epochs."""
    metric, larger_is_better = HEADLINE[data.task]
    values = [r[metric] for r in history if metric in r]  # the evaluated epochs
    last = history[-1]
    summary = {
        "method": method.label,
        "dataset": data.name,
        "data_source": data.source,
        "task": data.task,
        "model": config.model,
        "model_description": config.model_options().describe(),
        "loss": loss,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "feedback_init": config.feedback_init,
        "seed": config.seed,
        "settings": config.run_info(),
        **({"feedback_points": method.points.names} if getattr(method, "points", None) else {}),
        "epochs": last["epoch"],
        "train_seconds": last["train_seconds"],
        **({"train_joules": last["train_joules"], "energy_source": last["energy_source"]}
           if "train_joules" in last else {}),
        **({"step_memory_mb": history[0]["step_memory_mb"]} if "step_memory_mb" in history[0] else {}),
        "metric": metric,
        "test_loss": last["test_loss"],
        metric: last[metric],
        f"best_{metric}": max(values) if larger_is_better else min(values),
    }
    if data.task == "regression":
        summary["test_rmse"] = last["test_rmse"]
    if data.task == "lm":
        summary.update({k: last[k] for k in ("test_perplexity", "test_bits", "test_accuracy")})
        if data.vocabulary is not None:
            summary["test_bits_per_character"] = last["test_bits"] / characters_per_token(data.vocabulary,
                                                                                           data.test.t)
    if getattr(method, "buffer", None) is not None:
        summary["buffer_bytes"] = method.buffer.nbytes
    if "trainable_fraction" in last:
        summary.update(trainable_fraction=last["trainable_fraction"], ranks=last["ranks"])
    return summary


__all__ = ["SUMMARY_NAME", "build_run", "config_from_checkpoint", "restore_run", "summarize", "upgrade_settings"]
