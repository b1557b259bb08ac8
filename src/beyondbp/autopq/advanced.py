"""AutoPQ-advanced: the point forecaster, its hyperparameters and σ searched together, by many workers.

Meisenbacher et al. (2024), Sec. 3: where computing power allows, AutoPQ "simultaneously optimizes the point
forecasting method's hyperparameters and the sampling hyperparameter" (combined algorithm selection and
hyperparameter optimisation). Here every trial of an Optuna study (TPE sampler) draws a forecaster from
``search`` and its hyperparameters from :mod:`.spaces` (the authors' ranges), fits the forecaster, samples
the cINN's quantiles around its validation forecast and scores their CRPS. The sampler is one
with a single parameter (:class:`.choice.ScalarSampler`: the paper's σ, or ρ of ``mix``; by default
``mix+conformal``, calibrated), and its parameter is found in one of two ways (``sigma_search``):

- ``nested`` (default): each candidate gets the value that is best for its own forecast, by a line search
  on its logarithm (:func:`.search.line_search_sigma`, about a dozen cheap scorings of the fitted forecast),
  so that no candidate is judged by a value drawn for another;
- ``joint``: the parameter is one more dimension of the TPE search (the paper's wording, for σ); with a
  budget of tens of trials, a good forecaster then often loses to a poor one with a luckier σ (measured in
  NOTES.md).

With ``keep_default``, AutoPQ-default's configuration (``forecaster`` at its defaults, σ by its own
search) is a candidate too: the report keeps it where no searched candidate has a lower validation CRPS,
so the advanced configuration never scores worse on validation than the default one it costs more than.

Weak candidates stop early: a forecaster of windows is first fitted on the last ``partial`` share of the
training windows and scored; Optuna's median pruner stops the trial if that score is worse than the median
of earlier trials at the same step (successive fits). Series forecasters (ETS, SARIMAX) are fitted once.

The cINN is the same for every trial (it never sees the point forecast): it is trained once and kept in
``OUT/cinn.pt``. Workers share the study through Optuna's storage: a SQLite file for workers on one
machine (the default, ``OUT/study.db``), any database URL for workers on many machines. A worker that dies
leaves a trial that its heartbeat stops renewing; after the grace period it is marked failed (and, in a
database server's study, tried again); a local worker's trial is reclaimed at the next start at once (its
process is gone: :mod:`.workers`), and local workers end with the process that started them. Restarting continues the
study up to its budget (trials, or seconds per worker). A study remembers the series, seed and search
space it was made for and refuses another.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..energy import EnergyMeter, kwh
from ..errors import BeyondBPError
from ..folders import output_folder
from ..options import option
from ..tables import write_rows
from .choice import SCALAR_SAMPLERS, ScalarSampler, candidates
from .forecasters import make_forecaster, point_forecasts
from .run import SERIES_FIELDS, AutoPQConfig, baseline_quantiles, completed_run, conditional_inn, run_autopq
from .samplers import CINNQuantiles
from .scores import scores
from .series import Splits
from .spaces import SPACES
from .workers import RECLAIMED, die_with_parent, marking_sampler, reclaim_stale_trials

#: User attribute of a trial that started after the budget was filled by others (pruned at once, not counted).
SURPLUS = "surplus"
STUDY_FILE = "study.db"
CINN_FILE = "cinn.pt"
RESULT_FILE = "advanced.json"
ROLES = ("all", "worker", "report")
SIGMA_SEARCHES = ("nested", "joint")


@dataclass
class AdvancedConfig(AutoPQConfig):
    """Every setting of AutoPQ-advanced; the data, cINN and sampling settings are AutoPQ-default's, and
    ``forecaster`` names the AutoPQ-default run it is compared with."""

    sampler: str = option("mix+conformal", "AutoPQ-advanced", "the sampler of every candidate and of the "
                                                               "AutoPQ-default run it is compared with (one "
                                                               "parameter, tuned per candidate)",
                          choices=SCALAR_SAMPLERS)
    search: tuple[str, ...] = option(("mlp", "svr", "gbt", "ets", "sarimax", "nhits"), "AutoPQ-advanced",
                                     "forecasters searched, with their hyperparameters", metavar="NAMES")
    budget_trials: int = option(50, "AutoPQ-advanced", "trials of the joint search (all workers together)")
    budget_seconds: float | None = option(None, "AutoPQ-advanced", "stop each worker after this many seconds")
    sigma_search: str = option("nested", "AutoPQ-advanced", "nested: each candidate's own best sigma by a line "
                                                            "search; joint: sigma drawn by the TPE search",
                               choices=SIGMA_SEARCHES)
    keep_default: bool = option(True, "AutoPQ-advanced", "AutoPQ-default's configuration is a candidate too: "
                                                         "kept where no searched one has a lower validation CRPS")
    partial: float = option(0.25, "AutoPQ-advanced", "first fit on this share of the training windows; the median "
                                                     "pruner stops candidates worse than the median there")
    storage: str | None = option(None, "AutoPQ-advanced", "Optuna storage URL shared by the workers (default: "
                                                          "sqlite:///OUT/study.db)", metavar="URL")
    study: str = option("autopq-advanced", "AutoPQ-advanced", "study name in the storage")
    workers: int = option(1, "AutoPQ-advanced", "worker processes on this machine", metavar="N")
    threads: int | None = option(None, "AutoPQ-advanced", "threads of torch and the BLAS pools per worker (default: "
                                                          "the cores shared out among the workers; one worker: all)",
                                 metavar="N")
    role: str = option("all", "AutoPQ-advanced", "all: search with --workers, then report; worker: only search "
                                                 "(for your scheduler's processes); report: only report",
                       choices=ROLES)

    def validate(self) -> None:
        super().validate()
        unknown = [name for name in self.search if name not in SPACES]
        if unknown or not self.search:
            raise BeyondBPError(f"unknown forecaster '{unknown[0] if unknown else ''}' in the search space; known: "
                                f"{', '.join(SPACES)}")
        if self.budget_trials < 1 or (self.budget_seconds is not None and not self.budget_seconds > 0):
            raise BeyondBPError(f"the budget must be positive: got {self.budget_trials} trials and "
                                f"{self.budget_seconds} seconds")
        if self.workers < 1:
            raise BeyondBPError(f"workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise BeyondBPError(f"threads must be at least 1, got {self.threads}")
        if self.cinn_forecast:
            raise BeyondBPError("AutoPQ-advanced shares one cINN among its candidate forecasters; a cINN conditioned "
                                "on the forecast (cinn_forecast) belongs to one forecaster")
        if not 0 < self.partial <= 1:
            raise BeyondBPError(f"partial must lie in (0, 1], got {self.partial}")

    def identity(self) -> dict[str, Any]:
        """What a study is made for: the series, the seed, the search space and the scoring."""
        settings = asdict(self)
        return {"series": {k: settings[k] for k in SERIES_FIELDS}, "seed": self.seed,
                "search": sorted(self.search), "sigma": [self.sigma_low, self.sigma_high],
                "levels": list(self.levels), "partial": self.partial, "sigma_search": self.sigma_search,
                "samples": self.samples, "sampler": self.sampler,
                "cinn": [self.cinn_epochs, self.cinn_init_std]}

    def storage_url(self, out: Path) -> str:
        return self.storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"


def open_storage(url: str, attempts: int = 5):
    """Optuna's storage at ``url``. Processes that open a new database at once race to create its tables (one
    gets "table studies already exists" or a duplicate schema version); by the next attempt the schema is
    there, so such a failure (SQLAlchemy's operational or integrity error) is retried after a pause."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable for years
                # a retry is a queued trial, which two workers of one SQLite file can both take: servers only
                retry = (None if url.startswith("sqlite")
                         else optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
                return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                                  heartbeat_stale_trial_callback=retry)
        except Exception as error:  # SQLAlchemy's errors for unknown dialects, unreachable servers, bad paths
            if attempt + 1 == attempts or not isinstance(error, (OperationalError, IntegrityError)):
                raise BeyondBPError(f"cannot open the study storage {url}: {type(error).__name__}: "
                                    f"{str(error).splitlines()[0]}") from None
            time.sleep(0.2 * (attempt + 1))


def open_study(config: AdvancedConfig, out: Path, create: bool, worker: int = 0):
    """The study in the configured storage (created if ``create``), checked against ``config.identity()``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = config.storage_url(out)
    storage = open_storage(url)
    sampler = marking_sampler(config.seed * 1000 + worker)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    identity = json.dumps(config.identity(), sort_keys=True)
    try:
        study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise BeyondBPError(f"no study '{config.study}' in {url}; start it with --role all (or report)") from None
        try:
            study = optuna.create_study(study_name=config.study, storage=storage, sampler=sampler, pruner=pruner,
                                        direction="minimize")
            study.set_user_attr("identity", identity)
        except optuna.exceptions.DuplicatedStudyError:  # another process created it a moment ago
            time.sleep(0.5)
            study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler, pruner=pruner)
    if study.user_attrs.get("identity") != identity:
        raise BeyondBPError(f"study '{config.study}' in {url} was made for other settings "
                            f"({study.user_attrs.get('identity')}); give another --study or --storage")
    return study


def trials_in_budget(study, running: bool = False) -> list:
    """Trials that use the budget: finished or pruned (and, with ``running``, those running now), less the
    surplus ones that found the budget filled when they started."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED) + ((TrialState.RUNNING,) if running else ())
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(SURPLUS)]


def counted(study) -> int:
    """Trials that used the budget: finished or pruned."""
    return len(trials_in_budget(study))


def stop_at_budget(budget: int):
    """A callback: stop this worker when the finished trials and those other workers are running fill the
    budget (a killed worker's trial stops counting when its heartbeat expires, see :func:`open_study`)."""

    def check(study, trial) -> None:
        if len(trials_in_budget(study, running=True)) >= budget:
            study.stop()

    return check


class Objective:
    """One trial: draw a forecaster, its hyperparameters and σ; fit (partly, then fully); score the CRPS."""

    def __init__(self, config: AdvancedConfig, splits: Splits, net):
        self.config, self.splits, self.net = config, splits, net

    def validation_crps(self, forecaster, value: float | None, share: float) -> tuple[float, float]:
        """The CRPS of ``forecaster`` fitted on the last ``share`` of the training windows, and the sampler's
        parameter it was scored with: ``value``, or where that is None the best one for this forecast."""
        splits = self.splits
        if share < 1:
            keep = max(1, int(round(share * len(splits.train))))
            splits = dataclasses.replace(splits, train=splits.train[len(splits.train) - keep:])
        y_hat = point_forecasts(forecaster, splits, ("validation",))["validation"]
        cfg = self.config
        validation = CINNQuantiles(self.net, splits.validation.c, y_hat, splits.low, splits.high, cfg.samples,
                                   cfg.seed, cfg.device)
        return ScalarSampler(cfg.sampler, (cfg.sigma_low, cfg.sigma_high)).validation_crps(
            validation, splits.validation.y, np.asarray(cfg.levels), value)

    def __call__(self, trial) -> float:
        import optuna

        cfg = self.config
        # workers check the budget when a trial ends, so two may start one each for the last place: the trial
        # with the lower number keeps it, the other is pruned unrun and stops its worker
        earlier = [t for t in trials_in_budget(trial.study, running=True) if t.number < trial.number]
        if len(earlier) >= cfg.budget_trials:
            trial.set_user_attr(SURPLUS, True)
            trial.study.stop()
            raise optuna.TrialPruned()
        name = trial.suggest_categorical("forecaster", list(cfg.search))
        hyperparameters = SPACES[name](trial)
        drawn = (ScalarSampler(cfg.sampler, (cfg.sigma_low, cfg.sigma_high)).suggest(trial)
                 if cfg.sigma_search == "joint" else None)
        meter, started = EnergyMeter(cfg.device, cfg.watts_per_core), time.perf_counter()
        series_model = hasattr(make_forecaster(name, cfg.seed, **hyperparameters), "fit_series")
        shares = [1.0] if series_model or cfg.partial >= 1 else [cfg.partial, 1.0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence notices: a search tries poor candidates on purpose
                for step, share in enumerate(shares):
                    value, used = self.validation_crps(make_forecaster(name, cfg.seed, **hyperparameters), drawn,
                                                       share)
                    trial.set_user_attr("parameter", used)
                    if not np.isfinite(value):
                        raise ValueError(f"{name} gave a CRPS of {value}")
                    trial.report(value, step)
                    if step < len(shares) - 1 and trial.should_prune():
                        raise optuna.TrialPruned()
            return value
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            trial.set_user_attr("joules", meter.joules())
            trial.set_user_attr("energy_source", meter.source)


def prepare(config: AdvancedConfig, out: Path, progress: bool) -> tuple[Splits, Any, dict[str, Any]]:
    """The windows, the shared cINN (trained into ``OUT/cinn.pt`` by the first process that needs it) and the
    record of its training (seconds, joules)."""
    splits = config.windows(config.series())
    candidates(config.sampler, len(splits.validation), np.asarray(config.levels))  # a calibration split too short
    meter = EnergyMeter(config.device, config.watts_per_core)
    net, record = conditional_inn(config, splits, progress, out / CINN_FILE, meter)
    return splits, net, record


def work(config: AdvancedConfig, out: Path, worker: int = 0, progress: bool = True) -> int:
    """One worker: run trials until the study holds ``budget_trials`` or ``budget_seconds`` have passed."""
    from threadpoolctl import threadpool_limits

    threads = config.threads or (max(1, len(os.sched_getaffinity(0)) // config.workers) if config.workers > 1
                                 else None)
    if threads is not None:  # the workers share the cores: torch's threads and the BLAS/OpenMP pools of numpy,
        torch.set_num_threads(threads)  # scikit-learn and statsmodels, which would otherwise each take them all
    study = open_study(config, out, create=False, worker=worker)
    if counted(study) >= config.budget_trials:
        return 0
    splits, net, _ = prepare(config, out, progress=False)
    before = counted(study)
    bar = tqdm(total=config.budget_trials, initial=before, desc=f"AutoPQ-advanced, worker {worker}",
               disable=None if progress else True, leave=False)
    with bar, threadpool_limits(threads):
        study.optimize(Objective(config, splits, net), timeout=config.budget_seconds, catch=(Exception,),
                       callbacks=[stop_at_budget(config.budget_trials), lambda s, t: bar.update(counted(s) - bar.n)])
    return counted(study) - before


def _work_process(config: AdvancedConfig, out: Path, worker: int) -> int:
    die_with_parent()  # a worker never outlives the search that started it
    warnings.simplefilter("ignore", UserWarning)  # the data's notices: the parent process has shown them once
    return work(config, out, worker, progress=False)


def run_advanced(config: AdvancedConfig, out_dir: Path | str, progress: bool = True) -> dict[str, Any]:
    """What ``beyondbp autopq-advanced`` does: search (``role`` all or worker) and report (all or report)."""
    config.validate()
    out = output_folder(out_dir, "out")
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(config, out, create=config.role != "report")
    reclaimed = reclaim_stale_trials(study) if config.role != "report" else 0
    if reclaimed:
        print(f"beyondbp: {reclaimed} trial{'s were' if reclaimed > 1 else ' was'} left running by a worker "
              f"that has stopped; {'they run' if reclaimed > 1 else 'it runs'} again", file=sys.stderr)
    if config.role in ("all", "worker"):
        if config.role == "all" or config.workers > 1:
            prepare(config, out, progress)  # the cINN once, before the workers start
        if config.workers == 1:
            work(config, out, 0, progress)
        else:
            with ProcessPoolExecutor(config.workers, multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_work_process, config, out, w) for w in range(config.workers)]
                for future in futures:
                    future.result()
    return report(config, out, progress) if config.role != "worker" else {}


def report(config: AdvancedConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """The best configuration refitted on all training windows and scored on the test windows, against
    AutoPQ-default with ``config.forecaster`` (itself a candidate with ``keep_default``); every trial, the
    cost, a plot; written under ``out``."""
    from optuna.trial import TrialState

    study = open_study(config, out, create=False)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise BeyondBPError(f"study '{config.study}' has no finished trial yet")
    splits, net, cinn = prepare(config, out, progress)
    default_config = AutoPQConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(AutoPQConfig)})
    default = completed_run(out / "default", default_config) or run_autopq(
        default_config, out / "default", progress=progress, cinn_cache=out / CINN_FILE)
    chosen = choose(config, study.best_trial, default)
    started, meter = time.perf_counter(), EnergyMeter(config.device, config.watts_per_core)
    y_hat = point_forecasts(make_forecaster(chosen["forecaster"], config.seed, **chosen["hyperparameters"]), splits)
    levels = np.asarray(config.levels)
    validation = CINNQuantiles(net, splits.validation.c, y_hat["validation"], splits.low, splits.high,
                               config.samples, config.seed, config.device)
    test = CINNQuantiles(net, splits.test.c, y_hat["test"], splits.low, splits.high, config.samples,
                         config.seed + 1, config.device)
    sampler = ScalarSampler(config.sampler, (config.sigma_low, config.sigma_high))
    quantiles = {"advanced": sampler.test_quantiles(validation, test, splits.validation.y, levels,
                                                    chosen["parameter"]),
                 **baseline_quantiles(config, splits, y_hat)}
    metrics = {method: scores(splits.test.y, q, levels) for method, q in quantiles.items()}
    refit_joules = meter.joules()
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]
    rows = [{"trial": t.number, "state": t.state.name.lower(), "forecaster": t.params.get("forecaster", ""),
             "parameter": t.user_attrs.get("parameter", ""),
             "validation_crps": t.value if t.value is not None else "",
             "seconds": t.user_attrs.get("seconds", ""), "joules": t.user_attrs.get("joules", ""),
             "hyperparameters": json.dumps({k: v for k, v in t.params.items()
                                          if k not in ("forecaster", "sigma", "rho")})}
            for t in trials]
    search_joules = sum(float(r["joules"]) for r in rows if r["joules"] != "")
    total = search_joules + refit_joules + cinn["joules"]  # the cINN's training counts, as in AutoPQ-default's
    if config.keep_default:  # the default candidate's fit and σ search count too (its cINN is the shared one)
        total += default["energy_joules"] - (cinn["joules"] if default["cinn_reused"] else 0.0)
    states = [t.state.name.lower() for t in trials]
    summary = {"settings": asdict(config), "study": config.study, "storage": config.storage_url(out),
               "trials": {s: states.count(s) for s in sorted(set(states))},
               "reclaimed": study.user_attrs.get(RECLAIMED, 0),
               "best": chosen,
               "metrics": metrics,
               "default": {"forecaster": default["forecaster"], "parameter": default_parameter(config, default),
                           "validation_crps": default["validation_crps"],
                           "test_crps": default["metrics"]["autopq"]["crps"],
                           "test_crps_ensemble": default["metrics"]["autopq"]["crps_ensemble"],
                           "energy_kwh": default["energy_kwh"]},
               "search_seconds": sum(float(r["seconds"]) for r in rows if r["seconds"] != ""),
               "energy_kwh": kwh(total), "energy_cost": kwh(total) * config.price_per_kwh,
               "energy_source": meter.source, "report_seconds": time.perf_counter() - started}
    write_rows(rows, out / "trials.csv")
    (out / RESULT_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    from .plots import trials_plot

    trials_plot(rows, out / "trials.png", default["validation_crps"])
    return summary


def default_parameter(config: AdvancedConfig, default: dict[str, Any]) -> float:
    """The sampler's parameter in AutoPQ-default's run (made with the same sampler)."""
    return default["parameters"][ScalarSampler(config.sampler, (config.sigma_low, config.sigma_high)).key]


def choose(config: AdvancedConfig, best, default: dict[str, Any]) -> dict[str, Any]:
    """The configuration to refit: the study's ``best`` trial, or with ``keep_default`` AutoPQ-default's run
    where that scored lower (or as low) on validation. ``source`` says which."""
    import optuna

    if config.keep_default and default["validation_crps"] <= best.value:
        return {"source": "default", "forecaster": config.forecaster, "hyperparameters": {},
                "parameter": default_parameter(config, default), "validation_crps": default["validation_crps"],
                "trial": None}
    name = best.params["forecaster"]
    return {"source": "search", "forecaster": name,
            "hyperparameters": SPACES[name](optuna.trial.FixedTrial(best.params)),
            "parameter": best.user_attrs["parameter"], "validation_crps": best.value,
            "trial": best.number}
