"""One training run from plain settings: what ``beyondbp train`` and ``compare`` execute.

:class:`RunConfig` holds every setting; :func:`run` builds data, model, method and
optimizer from it, trains, and writes ``summary.json`` next to the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .ab_training import ABTraining
from .data import DATASETS, DataSplit, load_dataset, validation_split
from .distributed import DataParallel, from_environment
from .errors import BeyondBPError
from .lowrank import OIALR
from .methods import FEEDBACK_INITS, ForwardGradient, Method, make_method, method_options
from .methods.layerwise import LayerwiseFeedback
from .metrics import HEADLINE
from .data.user_files import load_user_file
from .models import ACTIVATIONS, MODELS, build_model
from .models.factory import build_user_model, is_factory, load_factory
from .objectives import make_objective
from .registry import Registry

#: Low-rank training schemes for ``--lowrank``.
LOWRANK = ("oialr", "ab")
from .train import Trainer

SUMMARY_NAME = "summary.json"

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam", "Adam (Kingma & Ba 2015)")(lambda params, lr, momentum: torch.optim.Adam(params, lr=lr))
OPTIMIZERS.register("sgd", "SGD with momentum (--momentum)")(
    lambda params, lr, momentum: torch.optim.SGD(params, lr=lr, momentum=momentum)
)


@dataclass
class RunConfig:
    """Every setting of one run. ``method`` may carry its variant: ``"f3:delayed_loss"``."""

    method: str = "bp"
    signal: str | None = None
    feedback_init: str = "kaiming_uniform"
    feedback_normalize: bool = False
    feedback_batch_mean: bool = False
    token_feedback: str = "shared"
    execution: str = "auto"
    unlocked: bool = False
    feedback_points: tuple[str, ...] = ()
    tangents: int = 1
    aggregation: str = "mean"
    sampler: str = "normal"
    perturb: str = "weights"
    angle: float | None = None
    rank: int = 10
    feedback_rule: str = "normative"
    feedback_lr: float = 1e-3
    lowrank: str | None = None
    oialr_start: int = 1000
    oialr_every: int = 250
    oialr_cutoff: float = 0.15
    ab_start: int = 500
    ab_sync_every: int = 100
    ab_full_steps: int = 10
    ab_rank: float = 0.25
    ab_sync: str = "products"
    dataset: str = "digits"
    data: str | None = None  # a user's .npz or .csv file (beyondbp.data.user_files); replaces dataset
    target: str | None = None
    task: str | None = None
    data_dir: str | None = None
    download: bool = False
    model: str = "mlp"
    hidden: tuple[int, ...] = (500,)
    activation: str = "tanh"
    channels: tuple[int, ...] = (32, 64)
    depth: int = 4
    width: int = 128
    heads: int = 4
    head_dim: int | None = None
    mlp: int = 256
    patch: int | None = None
    loss: str | None = None
    epochs: int = 10
    batch_size: int = 50
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    nproc: int = 1  # data-parallel processes on this machine (see beyondbp.launch)

    def build_method(self) -> Method:
        """The method, given the settings its constructor takes (the others concern other methods)."""
        name = self.method.partition(":")[0]
        accepted = method_options(name)
        if self.unlocked and "unlocked" not in accepted:
            raise BeyondBPError(f"unlocked updates need a direct-feedback method with a signal known in advance, "
                                f"not {name}")
        settings = {"signal": self.signal, "feedback_init": self.feedback_init,
                    "normalize": self.feedback_normalize, "batch_mean": self.feedback_batch_mean,
                    "token_feedback": self.token_feedback, "execution": self.execution, "unlocked": self.unlocked,
                    "tangents": self.tangents, "aggregation": self.aggregation, "sampler": self.sampler,
                    "perturb": self.perturb, "angle": self.angle, "rank": self.rank,
                    "feedback_rule": self.feedback_rule, "feedback_lr": self.feedback_lr,
                    "feedback_points": list(self.feedback_points) or None}
        signal = settings.pop("signal")
        return make_method(self.method, signal=signal,
                           **{k: v for k, v in settings.items() if k in accepted})

    def validate(self) -> None:
        """Check every name and number before any data is loaded."""
        self.build_method()
        FEEDBACK_INITS.get(self.feedback_init)
        if self.data is None:
            DATASETS.get(self.dataset)
            if self.target is not None or self.task is not None:
                raise BeyondBPError("a target column and a task apply to a data file (--data PATH) only")
        ACTIVATIONS.get(self.activation)
        OPTIMIZERS.get(self.optimizer)
        if is_factory(self.model):
            load_factory(self.model)
        else:
            MODELS.get(self.model)
        if self.nproc < 1:
            raise BeyondBPError(f"nproc must be at least 1, got {self.nproc}")
        if self.lowrank == "ab" and self.nproc < 2 and "WORLD_SIZE" not in os.environ:
            raise BeyondBPError("--lowrank ab needs data-parallel training on at least 2 processes: add --nproc 2 "
                                "(or launch with torchrun)")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise BeyondBPError(f"epochs, batch size and lr must be positive, got {self.epochs}, "
                                f"{self.batch_size}, {self.lr}")
        if any(h < 1 for h in self.hidden):
            raise BeyondBPError(f"hidden widths must be positive, got {','.join(map(str, self.hidden))}")
        resolve_device(self.device)
        if self.lowrank not in (None, *LOWRANK):
            raise BeyondBPError(f"unknown low-rank scheme '{self.lowrank}'; known: {', '.join(LOWRANK)}")
        method = self.build_method()
        if self.lowrank and isinstance(method, LayerwiseFeedback):
            raise BeyondBPError(f"--lowrank {self.lowrank} composes with bp, shallow, dfa, drtp, f3 and fg; layer-wise "
                                f"feedback ({self.method}) has no feedback path for factored layers yet")
        if self.lowrank == "ab":
            if isinstance(method, ForwardGradient):
                raise BeyondBPError("--lowrank ab does not compose with fg: fg exchanges its directional derivatives "
                                    "over all ranks, AB-training trains the factors in separate groups")
            ABTraining.check(self.ab_start, self.ab_sync_every, self.ab_full_steps, self.ab_rank, self.ab_sync)
        else:
            self.build_lowrank()

    def build_lowrank(self, parallel: DataParallel | None = None) -> OIALR | ABTraining | None:
        if self.lowrank == "ab":
            return ABTraining(parallel, start=self.ab_start, sync_every=self.ab_sync_every,
                              full_steps=self.ab_full_steps, rank=self.ab_rank, sync=self.ab_sync)
        if self.lowrank == "oialr":
            return OIALR(start=self.oialr_start, every=self.oialr_every, cutoff=self.oialr_cutoff)
        return None

    def load_data(self) -> DataSplit:
        """The run's data: the user's file (``data``) or the named data set."""
        if self.data is not None:
            return load_user_file(self.data, self.target, self.task, split_seed=0)
        return load_dataset(self.dataset, self.data_dir, self.download)

    def model_options(self) -> dict[str, Any]:
        """Every model setting; each model constructor takes the ones it knows."""
        return {"hidden": self.hidden, "activation": self.activation, "channels": self.channels,
                "depth": self.depth, "width": self.width, "heads": self.heads, "head_dim": self.head_dim,
                "mlp": self.mlp, "patch": self.patch}

    def run_info(self) -> dict[str, Any]:
        """Settings that a resumed run must share with its checkpoint (everything but epochs and device)."""
        info = dataclasses.asdict(self)
        for key in ("epochs", "device", "data_dir", "download", "execution"):
            info.pop(key)
        info["hidden"], info["channels"] = list(self.hidden), list(self.channels)
        info["feedback_points"] = list(self.feedback_points)
        for key in ADDED_LATER:  # left out at their defaults, so that older runs still resume
            if info[key] == ADDED_LATER[key]:
                del info[key]
        return info


#: Settings added after runs were stored, with their defaults (see :meth:`RunConfig.run_info`).
ADDED_LATER = {"feedback_points": [], "data": None, "target": None, "task": None}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BeyondBPError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BeyondBPError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def run(config: RunConfig, out_dir: Path | str | None = None, resume: bool = False, progress: bool = True,
        data: DataSplit | None = None, align_every: int = 0,
        validation: tuple[float, int] | None = None) -> dict[str, Any]:
    """Train one run and return its summary (also written to ``out_dir/summary.json``).

    ``align_every=N`` measures alignment with backprop every N epochs (into ``metrics.jsonl``)
    and plots it to ``out_dir/alignment.png``. ``validation=(fraction, seed)`` trains on the
    training set minus a held-out split and evaluates on that split. ``config.nproc > 1``
    launches the run on that many processes (:func:`beyondbp.launch.launch`; ``data`` is then
    loaded by each process).
    """
    config.validate()
    if config.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .launch import launch

        return launch(config, out_dir, resume, progress, align_every, validation)
    device = resolve_device(config.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    parallel = from_environment(device)
    completed = False
    try:
        summary = train_this_rank(config, device, parallel, out_dir, resume, progress, data, align_every, validation)
        completed = True
    finally:
        if parallel is not None:
            parallel.close(completed)
    return summary


def train_this_rank(config: RunConfig, device: torch.device, parallel: DataParallel | None,
                    out_dir: Path | str | None, resume: bool, progress: bool, data: DataSplit | None,
                    align_every: int, validation: tuple[float, int] | None) -> dict[str, Any]:
    """The body of :func:`run` in this process (one rank of a data-parallel run, or the only one)."""
    if parallel is not None and parallel.world != config.nproc:
        raise BeyondBPError(f"this run was launched on {parallel.world} processes but its settings say nproc "
                            f"{config.nproc}: pass --nproc {parallel.world}")
    data = data or config.load_data()
    if validation is not None:
        data = validation_split(data, *validation)
    model, method, optimizer, objective = build_run(config, data, device)
    trainer = Trainer(model, method, optimizer, objective, task=data.task,
                      target_scale=data.target_scale, device=device, out_dir=out_dir,
                      progress=progress and (parallel is None or parallel.is_main), run_info=config.run_info(),
                      lowrank=config.build_lowrank(parallel), parallel=parallel)
    history = trainer.fit(data.train, config.epochs, eval_set=data.test, batch_size=config.batch_size,
                          seed=config.seed, resume=resume, align_every=align_every)
    summary = summarize(config, method, objective.name, data, history)
    if parallel is not None:
        summary.update(world_size=parallel.world, comm_bytes_per_step=parallel.comm_bytes_per_step())
        if not parallel.is_main:
            return summary
    if out_dir is not None:
        (Path(out_dir) / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
        measured = [r for r in history if "alignment" in r]
        if measured:
            from .plots import plot_alignment

            plot_alignment(measured, Path(out_dir) / "alignment.png", title=f"{method.label} on {data.name}")
        events = [event for r in history for event in r.get(config.lowrank or "", [])]
        if config.lowrank == "oialr" and events:
            from .plots import plot_ranks

            plot_ranks(events, Path(out_dir) / "ranks.png", title=f"OIALR ranks: {method.label} on {data.name}")
    return summary


def build_run(config: RunConfig, data: DataSplit, device: torch.device):
    """The seeded model (on ``device``), the method, the optimizer and the objective of a run."""
    objective = make_objective(config.loss, data.task)
    torch.manual_seed(config.seed)
    if is_factory(config.model):
        model = build_user_model(config.model, data.train.input_shape, data.train.num_outputs,
                                 objective.output_activation()).to(device)
    else:
        model = build_model(config.model, data.train.input_shape, data.train.num_outputs,
                            objective.output_activation(), **config.model_options()).to(device)
    method = config.build_method()
    optimizer = OPTIMIZERS.get(config.optimizer)(model.parameters(), config.lr, config.momentum)
    return model, method, optimizer, objective


def config_from_checkpoint(state: dict[str, Any], **overrides) -> RunConfig:
    """The settings a checkpoint was made with (``run_info``), plus e.g. ``data_dir`` or ``device``."""
    info = dict(state["run_info"], hidden=tuple(state["run_info"]["hidden"]),
                channels=tuple(state["run_info"]["channels"]),
                feedback_points=tuple(state["run_info"].get("feedback_points", ())))
    return RunConfig(**info, epochs=len(state["history"]), **overrides)


def summarize(config: RunConfig, method: Method, loss: str, data: DataSplit,
              history: list[dict[str, Any]]) -> dict[str, Any]:
    metric, larger_is_better = HEADLINE[data.task]
    values = [r[metric] for r in history]
    last = history[-1]
    summary = {
        "method": method.label,
        "dataset": data.name,
        "task": data.task,
        "model": config.model,
        "hidden": list(config.hidden),
        "activation": config.activation,
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
        "metric": metric,
        "test_loss": last["test_loss"],
        metric: last[metric],
        f"best_{metric}": max(values) if larger_is_better else min(values),
    }
    if data.task == "regression":
        summary["test_rmse"] = last["test_rmse"]
    if "trainable_fraction" in last:
        summary.update(trainable_fraction=last["trainable_fraction"], ranks=last["ranks"])
    return summary
