"""One training run from plain settings: what ``beyondbp train`` and ``compare`` execute.

:class:`RunConfig` holds every setting; :func:`run` builds data, model, method and
optimizer from it, trains, and writes ``summary.json`` next to the metrics.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .ab_training import ABTraining
from .data import DATASETS, DataSplit, load_dataset, validation_split
from .data.user_files import TASKS, load_user_file
from .distributed import DataParallel, from_environment, launched_device, launched_world
from .energy import DEFAULT_WATTS_PER_CORE
from .errors import BeyondBPError
from .lowrank import OIALR
from .methods import DEFAULT_F3_SIGNAL, FEEDBACK_INITS, Method, make_method, method_options
from .methods.direct import EXECUTIONS, TOKEN_FEEDBACK
from .methods.signals import BUFFER_INITS
from .metrics import HEADLINE
from .models import ACTIVATIONS, MODELS, build_model
from .models.factory import build_user_model, is_factory, load_factory
from .objectives import make_objective
from .options import check_choices, method_settings, option
from .pipeline import BALANCES, check_method
from .registry import Registry
from .tracking import LOGGERS, FanOut, RunLogger, make_logger
from .train import Trainer

#: Low-rank training schemes for ``--lowrank``.
LOWRANK = ("oialr", "ab")

SUMMARY_NAME = "summary.json"

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam", "Adam (Kingma & Ba 2015)")(lambda params, lr, momentum: torch.optim.Adam(params, lr=lr))
OPTIMIZERS.register("sgd", "SGD with momentum (--momentum)")(
    lambda params, lr, momentum: torch.optim.SGD(params, lr=lr, momentum=momentum)
)


@dataclass
class RunConfig:
    """Every setting of one run. ``method`` may carry its variant: ``"f3:delayed_loss"``.

    Each field is declared once (:func:`~beyondbp.options.option`): its flag of ``beyondbp train`` and
    ``compare``, its help, and the method constructors' keyword it feeds.
    """

    method: str = option("bp", "method", "method or method:variant", flag=False)
    signal: str | None = option(None, "method", f"f3's signal (default {DEFAULT_F3_SIGNAL}); see 'beyondbp list'",
                                method_arg="signal")
    feedback_init: str = option("kaiming_uniform", "method", "initialisation of feedback matrices",
                                method_arg="feedback_init")
    feedback_normalize: bool = option(False, "method", "divide feedback matrices by sqrt(width)",
                                      method_arg="normalize")
    feedback_batch_mean: bool = option(False, "method", "divide the injected direct-feedback gradient by the batch "
                                                        "size (matters for SGD)", method_arg="batch_mean")
    token_feedback: str = option("shared", "method", "direct feedback on token sequences: one C x width matrix for "
                                                     "every token, or one per position",
                                 choices=TOKEN_FEEDBACK, method_arg="token_feedback")
    execution: str = option("auto", "method", "direct feedback: 'forward' updates each block as the forward pass "
                                              "reaches it (signals known in advance), 'autograd' does one backward "
                                              "at the end; auto picks forward where possible",
                            choices=EXECUTIONS, method_arg="execution")
    unlocked: bool = option(False, "method", "with forward execution: step each block's optimizer as soon as its "
                                             "gradient exists", method_arg="unlocked")
    feedback_points: tuple[str, ...] = option((), "method", "direct feedback and fg with activity tangents: module "
                                                            "names where the signal enters, e.g. layer1,layer2.1 "
                                                            "(default: every block but the last)",
                                              method_arg="feedback_points", metavar="NAMES")
    buffer_init: str = option("target", "method", "f3: what a sample's delayed signal reads before its first "
                                                  "visit (target: the paper, epoch 1 is DRTP; class_mean: the mean "
                                                  "error written so far for its class)",
                              choices=tuple(BUFFER_INITS), method_arg="buffer_init")
    center_signal: bool = option(False, "method", "direct feedback: remove each sample's mean over classes from "
                                                  "the signal (not in the papers)", method_arg="center_signal")
    signal_decay: float = option(1.0, "method", "f3: read a delayed signal as decay ** age x value, its age in "
                                                "epochs, and weigh class means by it (1: the paper, no decay; "
                                                "not in the papers)",
                                 method_arg="signal_decay")
    feedback_exclude: tuple[str, ...] = option((), "method", "direct feedback: parameter kinds of hidden blocks "
                                                             "kept out of the feedback, at their initialisation: "
                                                             "bias, norm (not in the papers)",
                                               method_arg="feedback_exclude", metavar="KINDS")
    tangents: int = option(1, "forward gradient (fg)", "tangents per step, k", method_arg="tangents")
    aggregation: str = option("mean", "forward gradient (fg)", "single, mean, sum or projection",
                              method_arg="aggregation")
    sampler: str = option("normal", "forward gradient (fg)", "normal, rademacher, basis or angle", method_arg="sampler")
    perturb: str = option("weights", "forward gradient (fg)", "weights or activities", method_arg="perturb")
    angle: float | None = option(None, "forward gradient (fg)", "pairwise angle of the tangents in degrees (sampler "
                                                                "angle)", method_arg="angle")
    rank: int = option(10, "low-dimensional feedback (ldfa)", "rank r of the feedback P Q", method_arg="rank")
    feedback_rule: str = option("normative", "low-dimensional feedback (ldfa)", "normative or local",
                                method_arg="feedback_rule")
    feedback_lr: float = option(1e-3, "low-dimensional feedback (ldfa)", "learning rate of P and Q",
                                method_arg="feedback_lr")
    lowrank: str | None = option(None, "low-rank training", "oialr (OIALR) or ab (AB-training, data-parallel with "
                                                            "--nproc >= 2)")
    oialr_start: int = option(1000, "low-rank training", "oialr: full-rank steps first")
    oialr_every: int = option(250, "low-rank training", "oialr: steps between re-orthogonalisation and cut")
    oialr_cutoff: float = option(0.15, "low-rank training", "oialr: cut singular values below this fraction of the "
                                                            "largest")
    ab_start: int = option(500, "low-rank training", "ab: full-rank warm-up steps")
    ab_sync_every: int = option(100, "low-rank training", "ab: steps the A and B groups train apart before "
                                                          "synchronising")
    ab_full_steps: int = option(10, "low-rank training", "ab: full-rank steps after each synchronisation")
    ab_rank: float = option(0.25, "low-rank training", "ab: rank of A B as a fraction of the full rank")
    ab_sync: str = option("products", "low-rank training", "ab: products (average of A B over ranks) or factors "
                                                           "(A of the A group times B of the B group)")
    dataset: str = option("digits", "data and model", "data set; see 'beyondbp list'")
    data: str | None = option(None, "data and model", "your own data file instead: .npz (arrays x, y; optional "
                                                      "x_test, y_test) or .csv (with --target)", metavar="PATH")
    target: str | None = option(None, "data and model", "--data FILE.csv: the target column", metavar="COLUMN")
    task: str | None = option(None, "data and model", "--data: force the task (default: classification for integer "
                                                      "or string targets)", choices=TASKS)
    data_dir: str | None = option(None, "data and model", "where data files are (also $BEYONDBP_DATA)")
    download: bool = option(False, "data and model", "download missing data files")
    model: str = option("mlp", "data and model", "model, or your own: FILE.py:FUNCTION or package.module:FUNCTION, "
                                                 "called as FUNCTION(input_shape, num_outputs)")
    hidden: tuple[int, ...] = option((500,), "data and model", "hidden widths, e.g. 500,500")
    activation: str = option("tanh", "data and model", "hidden activation")
    channels: tuple[int, ...] = option((32, 64), "data and model", "cnn: conv channels")
    depth: int = option(4, "data and model", "vit: transformer blocks; f3vit: hidden blocks, the last the head's "
                                             "hidden layer")
    width: int = option(128, "data and model", "vit: token width; f3vit: the whole sequence's width")
    heads: int = option(4, "data and model", "vit, f3vit: attention heads")
    head_dim: int | None = option(None, "data and model", "vit, f3vit: dimension per head (default token width / "
                                                          "heads)")
    mlp: int = option(256, "data and model", "vit, f3vit: MLP width")
    patch: int | None = option(None, "data and model", "vit, f3vit: patch size (default a quarter of the image side)")
    loss: str | None = option(None, "data and model", "bce (sigmoid output), ce or mse; default bce for "
                                                      "classification, mse for regression")
    epochs: int = option(10, "training", "epochs")
    batch_size: int = option(50, "training", "batch size (per process)")
    lr: float = option(1e-3, "training", "learning rate")
    hidden_lr_scale: float = option(1.0, "training", "learning rate of every block but the output block (the "
                                                     "model's last child), as a multiple of --lr (not in the "
                                                     "papers)")
    optimizer: str = option("adam", "training", "adam or sgd")
    momentum: float = option(0.9, "training", "momentum, for sgd")
    seed: int = option(0, "training", "seed", flag=False)
    device: str = option("auto", "training", "auto (cuda if available), cpu, cuda, cuda:N")
    nproc: int = option(1, "training", "data-parallel training on N processes of this machine (launches torchrun); "
                                       "see README", metavar="N")
    stages: int = option(1, "training", "layer-parallel: cut the model's blocks into N stages, one process each, "
                                        "updated as the forward pass reaches them (f3, drtp, shallow; launches "
                                        "torchrun); see README", metavar="N")
    balance: str = option("parameters", "training", "stages: cut by parameter count or by measured time per block",
                          choices=BALANCES)
    watts_per_core: float = option(DEFAULT_WATTS_PER_CORE, "training", "energy estimate where RAPL is not "
                                                                      "readable: watts per busy CPU core")
    log: str | None = option(None, "training", "track the run: tensorboard (event files in OUT/tensorboard)",
                             choices=tuple(LOGGERS.names()))

    def build_method(self) -> Method:
        """The method, given the settings its constructor takes (the others concern other methods)."""
        name = self.method.partition(":")[0]
        accepted = method_options(name)
        if self.unlocked and "unlocked" not in accepted:
            raise BeyondBPError(f"unlocked updates need a direct-feedback method with a signal known in advance, "
                                f"not {name}")
        settings = method_settings(self)
        settings["feedback_points"] = list(self.feedback_points) or None
        signal = settings.pop("signal")
        return make_method(self.method, signal=signal,
                           **{k: v for k, v in settings.items() if k in accepted})

    def inapplicable(self) -> list[str]:
        """Method settings changed from their defaults that this run's method does not take (a suite or
        ``compare`` shares settings among methods, so only ``beyondbp train`` refuses them)."""
        accepted = set(method_options(self.method.partition(":")[0]))
        return [f.name for f in dataclasses.fields(self) if f.metadata.get("method_arg")
                and f.metadata["method_arg"] not in accepted and getattr(self, f.name) != f.default
                and f.name != "signal"]

    def validate(self) -> None:
        """Check every name and number before any data is loaded."""
        check_choices(self)
        self.build_method()
        FEEDBACK_INITS.get(self.feedback_init)
        if self.data is None:
            DATASETS.get(self.dataset)
            if self.target is not None or self.task is not None:
                raise BeyondBPError("a target column and a task apply to a data file (data=PATH) only")
        ACTIVATIONS.get(self.activation)
        OPTIMIZERS.get(self.optimizer)
        if is_factory(self.model):
            load_factory(self.model)
        else:
            MODELS.get(self.model)
        if self.nproc < 1:
            raise BeyondBPError(f"nproc must be at least 1, got {self.nproc}")
        if self.stages < 1:
            raise BeyondBPError(f"stages must be at least 1, got {self.stages}")
        if self.stages > 1 and (self.nproc > 1 or self.lowrank is not None):
            raise BeyondBPError("stages cannot be combined with " + ("data parallelism (nproc)" if self.nproc > 1
                                                                     else f"low-rank training ({self.lowrank})"))
        if self.stages > 1:
            check_method(self.build_method())
        if self.lowrank == "ab" and self.nproc < 2 and launched_world() is None:
            raise BeyondBPError("lowrank='ab' needs data-parallel training on at least 2 processes: set nproc=2 "
                                "(or launch with torchrun)")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise BeyondBPError(f"epochs, batch size and lr must be positive, got {self.epochs}, "
                                f"{self.batch_size}, {self.lr}")
        if not self.hidden_lr_scale > 0:
            raise BeyondBPError(f"hidden_lr_scale must be positive, got {self.hidden_lr_scale}")
        if not self.watts_per_core > 0:
            raise BeyondBPError(f"watts per core must be positive, got {self.watts_per_core}")
        if any(h < 1 for h in self.hidden):
            raise BeyondBPError(f"hidden widths must be positive, got {','.join(map(str, self.hidden))}")
        resolve_device(self.device)
        if self.lowrank not in (None, *LOWRANK):
            raise BeyondBPError(f"unknown low-rank scheme '{self.lowrank}'; known: {', '.join(LOWRANK)}")
        method = self.build_method()
        if self.lowrank == "ab":
            ABTraining.check_method(method)
            ABTraining.check(self.ab_start, self.ab_sync_every, self.ab_full_steps, self.ab_rank, self.ab_sync)
        elif self.lowrank == "oialr":
            self.build_lowrank().check_method(method)

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
        for key in ("epochs", "device", "data_dir", "download", "execution", "watts_per_core", "log"):
            info.pop(key)
        info["hidden"], info["channels"] = list(self.hidden), list(self.channels)
        info["feedback_points"] = list(self.feedback_points)
        info["feedback_exclude"] = list(self.feedback_exclude)
        for key in ADDED_LATER:  # left out at their defaults, so that older runs still resume
            if info[key] == ADDED_LATER[key]:
                del info[key]
        return info


#: Settings added after runs were stored, with their defaults (see :meth:`RunConfig.run_info`).
ADDED_LATER = {"feedback_points": [], "data": None, "target": None, "task": None, "stages": 1,
               "balance": "parameters", "buffer_init": "target", "center_signal": False, "feedback_exclude": [],
               "hidden_lr_scale": 1.0, "signal_decay": 1.0}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BeyondBPError(f"device '{name}' requested but CUDA is not available; use device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BeyondBPError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def run(config: RunConfig, out_dir: Path | str | None = None, resume: bool = False, progress: bool = True,
        data: DataSplit | None = None, align_every: int = 0,
        validation: tuple[float, int] | None = None, logger: RunLogger | None = None) -> dict[str, Any]:
    """Train one run and return its summary (also written to ``out_dir/summary.json``).

    ``align_every=N`` measures alignment with backprop every N epochs (into ``metrics.jsonl``)
    and plots it to ``out_dir/alignment.png``. ``validation=(fraction, seed)`` trains on the
    training set minus a held-out split and evaluates on that split. ``logger`` (a
    :class:`~beyondbp.tracking.RunLogger`) receives the run's steps and epochs besides ``config.log``'s.
    ``config.nproc > 1`` launches the run on that many processes (:func:`beyondbp.launch.launch`;
    ``data`` is then loaded by each process).
    """
    config.validate()
    if config.stages > 1 and align_every:
        raise BeyondBPError("alignment is measured against backprop on the whole model, which no stage holds: "
                            "leave align_every at 0 with stages")
    if config.stages > 1 and config.log is not None:
        raise BeyondBPError(f"log={config.log} does not follow runs with stages yet; read OUT/metrics.jsonl")
    if config.stages > 1 and launched_world() is None:
        from .pipeline import check_stages

        data = data or config.load_data()
        check_stages(config, validation_split(data, *validation) if validation is not None else data)
    if (config.nproc > 1 or config.stages > 1) and launched_world() is None:
        from .launch import launch

        if logger is not None:
            raise BeyondBPError("a logger object cannot follow a run on several processes; use config.log")
        return launch(config, out_dir, resume, progress, align_every, validation)
    device = launched_device(resolve_device(config.device))
    if config.stages > 1:
        from .pipeline import train_stages

        data = data or config.load_data()
        data = validation_split(data, *validation) if validation is not None else data
        return train_stages(config, device, out_dir, resume, progress, data)
    parallel = from_environment(device)
    completed = False
    try:
        summary = train_this_rank(config, device, parallel, out_dir, resume, progress, data, align_every, validation,
                                  logger)
        completed = True
    finally:
        if parallel is not None:
            parallel.close(completed)
    return summary


def train_this_rank(config: RunConfig, device: torch.device, parallel: DataParallel | None,
                    out_dir: Path | str | None, resume: bool, progress: bool, data: DataSplit | None,
                    align_every: int, validation: tuple[float, int] | None,
                    logger: RunLogger | None = None) -> dict[str, Any]:
    """The body of :func:`run` in this process (one rank of a data-parallel run, or the only one)."""
    if parallel is not None and parallel.world != config.nproc:
        raise BeyondBPError(f"this run was launched on {parallel.world} processes but its settings say nproc "
                            f"{config.nproc}: set nproc={parallel.world}")
    data = data or config.load_data()
    if validation is not None:
        data = validation_split(data, *validation)
    model, method, optimizer, objective = build_run(config, data, device)
    if config.log is not None and (parallel is None or parallel.is_main):
        if out_dir is None:
            raise BeyondBPError(f"log={config.log} needs an output folder (out_dir, --out)")
        logger = FanOut(make_logger(config.log, out_dir), *([logger] if logger is not None else []))
    trainer = Trainer(model, method, optimizer, objective, task=data.task,
                      target_scale=data.target_scale, device=device, out_dir=out_dir,
                      progress=progress and (parallel is None or parallel.is_main), run_info=config.run_info(),
                      lowrank=config.build_lowrank(parallel), parallel=parallel,
                      watts_per_core=config.watts_per_core, logger=logger)
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
    optimizer = OPTIMIZERS.get(config.optimizer)(parameter_groups(config, model, list(model.parameters())),
                                                 config.lr, config.momentum)
    return model, method, optimizer, objective


def parameter_groups(config: RunConfig, model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list:
    """``params`` as the optimizer's groups: with ``hidden_lr_scale`` the output block's (the model's last
    child) at ``lr``, the others at ``lr × hidden_lr_scale``; otherwise one group."""
    if config.hidden_lr_scale == 1:
        return params
    if not isinstance(model, torch.nn.Sequential) or len(model) < 2:
        raise BeyondBPError(f"hidden_lr_scale needs a model that is a sequence of blocks (nn.Sequential), whose last "
                            f"child is the output block; {type(model).__name__} is not")
    head = {id(p) for p in model[-1].parameters()}
    groups = [{"params": [p for p in params if id(p) not in head], "lr": config.lr * config.hidden_lr_scale},
              {"params": [p for p in params if id(p) in head]}]
    return [g for g in groups if g["params"]]


def config_from_checkpoint(state: dict[str, Any], **overrides) -> RunConfig:
    """The settings a checkpoint was made with (``run_info``), plus e.g. ``data_dir`` or ``device``."""
    info = dict(state["run_info"], hidden=tuple(state["run_info"]["hidden"]),
                channels=tuple(state["run_info"]["channels"]),
                feedback_points=tuple(state["run_info"].get("feedback_points", ())),
                feedback_exclude=tuple(state["run_info"].get("feedback_exclude", ())))
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
        **({"train_joules": last["train_joules"], "energy_source": last["energy_source"]}
           if "train_joules" in last else {}),
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
