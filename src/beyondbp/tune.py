"""Fair per-method tuning: the same search budget for every method, so that a comparison is not decided by
one method's lucky learning rate.

Optuna's tree-structured Parzen estimator (seeded) searches the learning rate on a log scale between
``lr_bounds`` and, optionally, other numeric settings of :class:`~beyondbp.experiment.RunConfig` given as
:class:`Range` (``momentum=0.5:0.99``, ``batch_size=16:128``, ``feedback_lr=1e-4:1e-2:log``). Every trial
trains on the training set minus a held-out validation split (``validation_fraction``, drawn with
``seed``) and is scored on that split, never on the test set. Optuna's median pruner stops a trial whose
validation score after an epoch is worse than the median of earlier trials after the same epoch (it
listens to the run through the :class:`~beyondbp.tracking.RunLogger` interface). With ``jobs > 1`` trials
run ``jobs`` at a time, each in its own process, in rounds (:mod:`.parallel_trials`): the same call with the
same ``jobs`` gives the same trials (a trial does not see the results of those in its own round, so another
``jobs`` proposes others).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import RunConfig, upgrade_settings
from .errors import BeyondBPError
from .experiment import run
from .metrics import HEADLINE
from .options import setting
from .parallel_trials import run_rounds
from .tables import write_rows

#: RunConfig fields that a tuner may not set (they define the budget, the run or the measurement).
NOT_TUNABLE = ("epochs", "seed", "nproc", "watts_per_core", "lr")
#: the file in a search's output folder that stores its trials
STUDY_FILE = "study.db"


def tunable_settings() -> dict[str, type]:
    """The numeric RunConfig fields a trial may set, with their type (int or float)."""
    hints = typing.get_type_hints(RunConfig)
    found = {}
    for field in dataclasses.fields(RunConfig):
        kinds = set(typing.get_args(hints[field.name])) - {type(None)} or {hints[field.name]}
        if field.name not in NOT_TUNABLE and len(kinds) == 1 and (kind := kinds.pop()) in (int, float):
            found[field.name] = kind
    return found


@dataclass(frozen=True)
class Range:
    """A setting searched between ``low`` and ``high`` (log scale if ``log``)."""

    name: str
    low: float
    high: float
    log: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        """``NAME=LOW:HIGH`` or ``NAME=LOW:HIGH:log``."""
        name, _, bounds = text.partition("=")
        parts = bounds.split(":")
        try:
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
                raise ValueError
            return cls(name.strip().replace("-", "_"), float(parts[0]), float(parts[1]), len(parts) == 3)
        except ValueError:
            raise BeyondBPError(f"a tuned setting reads NAME=LOW:HIGH or NAME=LOW:HIGH:log, got '{text}'") from None

    def check(self) -> None:
        known = tunable_settings()
        if self.name not in known:
            raise BeyondBPError(f"'{self.name}' is not a numeric setting that can be tuned; tunable: "
                                f"{', '.join(sorted(known))} (and lr, through the lr bounds)")
        if not self.low < self.high or (self.log and not self.low > 0):
            raise BeyondBPError(f"{self.name}: bounds must satisfy low < high (and 0 < low on a log scale), got "
                                f"{self.low:g} and {self.high:g}")

    def suggest(self, trial) -> int | float:
        if tunable_settings()[self.name] is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


class PruningReporter:
    """Gives each epoch's validation score to ``report(score, epoch)``, which raises
    :class:`optuna.TrialPruned` when the trial should stop (:func:`~beyondbp.parallel_trials.report_to`)."""

    def __init__(self, report: Callable[[float, int], None], metric: str):
        self.report, self.metric = report, metric

    def scalars(self, values: dict[str, float], step: int) -> None:
        score = values.get(f"epoch/{self.metric}")
        if score is not None:
            self.report(score, step)

    def hyperparameters(self, settings: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def check_search(base: RunConfig, trials: int, lr_bounds: tuple[float, float], ranges: tuple[Range, ...],
                 validation_fraction: float, jobs: int) -> None:
    """Every setting of a search, before any data is loaded."""
    low, high = lr_bounds
    if trials < 1:
        raise BeyondBPError(f"trials must be at least 1, got {trials}")
    if not 0 < low < high:
        raise BeyondBPError(f"learning-rate bounds must satisfy 0 < low < high, got {low:g} and {high:g}")
    if not 0 < validation_fraction < 1 or jobs < 1:
        raise BeyondBPError(f"the validation fraction must lie in (0, 1) and jobs be at least 1, got "
                            f"{validation_fraction} and {jobs}")
    for searched in ranges:
        searched.check()
    if base.nproc > 1:
        raise BeyondBPError(f"tuning runs each trial in this process: set {setting('nproc', 1)}")
    base.validate()


def tune(base: RunConfig, trials: int, lr_bounds: tuple[float, float] = (1e-4, 1e-2),
         ranges: tuple[Range, ...] = (), validation_fraction: float = 0.1, seed: int = 0, jobs: int = 1,
         out_dir: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Search ``base``'s learning rate (and ``ranges``) for ``trials`` trials; returns the best settings and
    every trial. With ``out_dir``: one folder per trial under ``trials/``, ``trials.csv``, ``best.json``,
    ``tune.png`` (validation score against learning rate) and the study in ``study.db``: calling again with
    the same folder and settings continues a stopped search, runs only the trials missing to ``trials`` (so a
    larger ``trials`` extends a finished one) and otherwise reads the finished search back."""

    low, high = lr_bounds
    check_search(base, trials, lr_bounds, ranges, validation_fraction, jobs)
    data = base.load_data()
    metric, larger_is_better = HEADLINE[data.task]
    out = Path(out_dir) if out_dir is not None else None
    run_info = {key: value for key, value in base.run_info().items() if key != "lr"}
    identity = {"run": run_info, "epochs": base.epochs, "lr": [low, high],
                "ranges": [dataclasses.astuple(r) for r in ranges], "validation_fraction": validation_fraction,
                "search_seed": seed, "direction": larger_is_better}
    study = open_study(out, identity, seed)
    done = [t for t in study.trials if t.number not in study.user_attrs["interrupted"] and t.state.is_finished()]
    bar = tqdm(total=trials, initial=min(len(done), trials), desc=f"tuning {base.method}",
               disable=None if progress else True, dynamic_ncols=True)

    def propose(trial) -> dict[str, Any]:
        return {"lr": trial.suggest_float("lr", low, high, log=True), **{r.name: r.suggest(trial) for r in ranges}}

    evaluate = partial(evaluate_trial, base, out, (validation_fraction, seed), metric)
    with bar:
        run_rounds(study, propose, evaluate, trials - len(done), jobs, bar.update, data)
    return report_search(study, base, metric, validation_fraction, seed, out)


def evaluate_trial(base: RunConfig, out: Path | None, validation: tuple[float, int], metric: str, number: int,
                   settings: dict[str, Any], data, report: Callable[[float, int], None]) -> float:
    """One trial: ``base`` with ``settings``, trained on ``data`` less the validation split, scored on it."""
    config = replace(base, **settings)
    config.validate()
    folder = out / "trials" / f"{number:03d}" if out is not None else None
    summary = run(config, folder, progress=False, data=data, validation=validation,
                  logger=PruningReporter(report, metric))
    return summary[metric]


def report_search(study, base: RunConfig, metric: str, validation_fraction: float, seed: int,
                  out: Path | None) -> dict[str, Any]:
    """The search's best settings and every trial, written to ``out`` (``trials.csv``, ``best.json``,
    ``tune.png``) when given."""
    counted = [t for t in study.trials if t.number not in study.user_attrs["interrupted"]]
    name = f"validation_{metric.removeprefix('test_')}"
    last = lambda t: t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else ""
    rows = [{"trial": t.number, "state": t.state.name.lower(), **t.params,
             name: t.value if t.value is not None else last(t), "epochs": max(t.intermediate_values, default=0)}
            for t in counted]
    finished = [t for t in counted if t.value is not None]
    if not finished:
        raise BeyondBPError(f"no trial of {base.method} finished (every one diverged or was stopped); "
                            "try lower learning-rate bounds")
    best = {"method": base.method, "metric": name,
            "value": study.best_value, "settings": study.best_params, "trial": study.best_trial.number,
            "trials": len(rows),
            "pruned": sum(r["state"] == "pruned" for r in rows), "failed": sum(r["state"] == "fail" for r in rows),
            "validation_fraction": validation_fraction, "seed": seed}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_rows(rows, out / "trials.csv")
        (out / "best.json").write_text(json.dumps(best, indent=2) + "\n")
        tune_plot(rows, best["metric"], out / "tune.png", f"{base.method} on {base.dataset}")
    return {"best": best, "trials": rows}


def open_study(out: Path | None, identity: dict[str, Any], seed: int):
    """The search's Optuna study: in memory, or with ``out`` in ``out/study.db`` (SQLite), so that a search that
    was stopped continues where it stopped and one that finished is read back. A stored study made for other
    settings is refused. Trials left running by a stopped process are marked interrupted (they do not count and
    are not reported; their settings are not queued again, since parallel trials could both take a queued one);
    the sampler starts afresh from ``seed``, so a resumed search can propose other settings than an
    uninterrupted one would have."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    identity = json.loads(json.dumps(identity))  # as stored: tuples become lists
    direction = "maximize" if identity["direction"] else "minimize"
    storage = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / STUDY_FILE).resolve()}"
    study = optuna.create_study(study_name="tune", storage=storage, load_if_exists=True, direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    stored = study.user_attrs.get("identity")
    if stored is not None:  # the run's settings as stored by an older version, in today's form (lr is not kept)
        upgraded = upgrade_settings(stored["run"])
        stored = {**stored, "run": {k: v for k, v in upgraded.items() if k in stored["run"] or k in identity["run"]}}
    if stored is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("interrupted", [])
    elif stored != identity:
        theirs, ours = flat(stored), flat(identity)
        changed = ", ".join(f"{key} {theirs.get(key)} there, {ours.get(key)} here"
                            for key in sorted(theirs.keys() | ours.keys()) if theirs.get(key) != ours.get(key))
        raise BeyondBPError(f"{out} holds a search made for other settings ({changed}); give another output "
                            "folder or delete that one")
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        shutil.rmtree(out / "trials" / f"{trial.number:03d}", ignore_errors=True)
    if stale:
        study.set_user_attr("interrupted", study.user_attrs["interrupted"] + [t.number for t in stale])
    return study


def flat(settings: dict[str, Any]) -> dict[str, Any]:
    """A search's identity with the run's settings lifted to the top level, for naming what differs."""
    return {**{k: v for k, v in settings.items() if k != "run"}, **settings.get("run", {})}


def tune_plot(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> None:
    """The validation score of every trial against its learning rate (log scale); pruned trials show the
    last score they reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        mine = [r for r in rows if r["state"] == state and r[metric] != ""]
        if mine:
            ax.scatter([r["lr"] for r in mine], [r[metric] for r in mine], marker=marker, label=state)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
