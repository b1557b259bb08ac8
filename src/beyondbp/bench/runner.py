"""Running a suite: learning-rate selection on a validation split, then every seed on the test set.

Each run has its own folder under ``runs/bench/SUITE/``; a finished run (its
``summary.json`` holds all epochs) is never run again and an interrupted one resumes from
its checkpoint, so an interrupted suite continues where it stopped. A finished run whose
settings are not the suite's any more (the suite file was edited) is refused, naming the
settings and the folder to delete, instead of being reported under the new settings.
``jobs > 1`` runs that many processes, each with ``cores / jobs`` threads.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..build import SUMMARY_NAME
from ..config import RunConfig, upgrade_settings
from ..data import DataSplit
from ..data.options import DataOptions
from ..errors import BeyondBPError, DivergenceError, show_warnings_in_one_line
from ..experiment import run
from ..metrics import HEADLINE
from ..ngram import ngram_losses
from ..plots import metric_curve
from ..tables import read_rows, write_rows
from ..train import METRICS_NAME, changed_settings
from .machine import machine_description
from .report import SAMPLE, plot_suite, plot_sweeps, suite_markdown, with_measured_memory, write_suite_csv
from .suite import Suite

RESULTS_DIR = Path("benchmarks") / "results"
RUNS_DIR = Path("runs") / "bench"
DIVERGED_NAME = "diverged.json"


@dataclass(frozen=True)
class Job:
    """One run: its settings, its folder, and (for tuning) the validation split to evaluate on."""

    config: RunConfig
    out_dir: Path
    validation: tuple[float, int] | None = None
    model: str = ""  # the suite's labels of the model and the method
    method: str = ""
    align_every: int = 0

    def outcome(self) -> dict[str, Any] | None:
        """The finished run's summary (``{"diverged": message}`` for a diverged one), or None."""
        if (self.out_dir / DIVERGED_NAME).is_file():
            return json.loads((self.out_dir / DIVERGED_NAME).read_text())
        path = self.out_dir / SUMMARY_NAME
        if path.is_file():
            summary = json.loads(path.read_text())
            if "settings" in summary:  # summaries written before settings were stored are taken as they are
                changed = changed_settings(summary["settings"], self.config.run_info(), upgrade_settings)
                if changed:
                    raise BeyondBPError(f"{self.out_dir} holds a run made with other settings ({', '.join(changed)}) "
                                        f"than the suite's now: delete that folder to run it again")
            if summary["epochs"] == self.config.epochs:
                return summary
        return None


def cached_data(config: RunConfig) -> DataSplit:
    """The run's data as its data options read it (a corpus's context and tokens too), loaded once per process."""
    return _load_data(tuple(vars(config.data_options()).items()))


@lru_cache(maxsize=4)
def _load_data(settings: tuple) -> DataSplit:
    return DataOptions(**dict(settings)).load()


def dataset_task(suite: Suite, dataset: str) -> str:
    """The task of one of the suite's data sets."""
    model, method = next(iter(suite.models)), suite.methods[0]
    return cached_data(suite.config(dataset, model, method, 0, suite.tuning.first_lr(), 1)).task


def execute_job(job: Job) -> dict[str, Any]:
    data = cached_data(job.config) if job.config.nproc == 1 else None  # launched runs load their own
    try:
        return run(job.config, job.out_dir, resume=True, progress=False, data=data, align_every=job.align_every,
                   validation=job.validation)
    except DivergenceError as error:
        outcome = {"diverged": str(error)}
        (job.out_dir / DIVERGED_NAME).write_text(json.dumps(outcome) + "\n")
        return outcome


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    show_warnings_in_one_line()


def execute(jobs: list[Job], n_jobs: int, desc: str) -> tuple[list[dict[str, Any]], int]:
    """Run the unfinished jobs (in ``n_jobs`` processes); every job's outcome, in order, and how many ran."""
    pending = [job for job in jobs if job.outcome() is None]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=desc, dynamic_ncols=True)
    with bar:
        if n_jobs <= 1:
            for job in pending:
                execute_job(job)
                bar.update()
        else:
            threads = max(1, (os.cpu_count() or 1) // n_jobs)
            context = multiprocessing.get_context("spawn")  # no fork of a process whose thread pools are running
            with ProcessPoolExecutor(n_jobs, context, initializer=_init_worker, initargs=(threads,)) as pool:
                for future in as_completed([pool.submit(execute_job, job) for job in pending]):
                    future.result()
                    bar.update()
    return [job.outcome() for job in jobs], len(pending)


def headline_value(outcome: dict[str, Any]) -> float:
    return math.nan if "diverged" in outcome else outcome[outcome["metric"]]


def run_dir(runs_dir: Path, dataset: str, model: str, method: str, name: str) -> Path:
    return runs_dir / dataset / model / method.replace(":", "-") / name


def choose_learning_rates(suite: Suite, runs_dir: Path, n_jobs: int) -> tuple[list[dict[str, Any]], int]:
    """Per (dataset, model, method): the lr with the best final validation metric; and how many runs ran.
    A grid of one learning rate is no choice: nothing runs and the validation score is NaN."""
    cells = suite.cells()
    if suite.tuning.lr_range is not None:
        return search_learning_rates(suite, runs_dir, n_jobs)
    if len(suite.tuning.lrs) == 1:
        return [{"dataset": d, "model": model, "method": m, "lr": suite.tuning.lrs[0], "validation": math.nan,
                 "chosen": True} for d, model, m in cells], 0
    jobs = [Job(suite.config(d, model, m, suite.tuning.seed, lr, suite.tuning_epochs(d)),
                run_dir(runs_dir, d, model, m, f"tune-lr{lr:g}"), (suite.tuning.validation_fraction, suite.tuning.seed))
            for d, model, m in cells for lr in suite.tuning.lrs]
    outcomes, ran = execute(jobs, n_jobs, f"{suite.name}: lr selection")
    outcomes = iter(outcomes)
    rows = []
    for dataset, model, method in cells:
        larger_is_better = HEADLINE[dataset_task(suite, dataset)][1]
        scored = [(lr, headline_value(next(outcomes))) for lr in suite.tuning.lrs]
        valid = [(lr, v) for lr, v in scored if not math.isnan(v)]
        best = (max if larger_is_better else min)(valid, key=lambda lv: lv[1])[0] if valid else suite.tuning.lrs[0]
        for lr, value in scored:
            rows.append({"dataset": dataset, "model": model, "method": method, "lr": lr,
                         "validation": value, "chosen": lr == best})
    return rows, ran


def search_learning_rates(suite: Suite, runs_dir: Path, n_jobs: int) -> tuple[list[dict[str, Any]], int]:
    """Per (dataset, model, method): Optuna's TPE over the suite's lr range, the same number of trials and
    epochs for every method (:func:`beyondbp.tune.tune`, ``n_jobs`` trials at a time); every trial is a row.
    A cell whose search finished with the same settings is read back, one that was stopped continues, one
    with fewer trials than the suite now asks is extended; a smaller ``trials`` or other settings start it over."""
    from ..tune import tune

    t, rows, ran = suite.tuning, [], 0
    for dataset, model, method in suite.cells():
        config = suite.config(dataset, model, method, t.seed, t.lr_range[0], suite.tuning_epochs(dataset))
        out = run_dir(runs_dir, dataset, model, method, "tune")
        key = {"run": config.run_info(), "epochs": config.epochs, "lr": list(t.lr_range), "trials": t.trials,
               "validation_fraction": t.validation_fraction, "seed": t.seed}
        stamp = out / "suite-key.json"
        stored = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if "run" in stored:  # settings stored by an older version, in today's form
            stored["run"] = upgrade_settings(stored["run"])
        extends = {**stored, "trials": t.trials} == key and stored.get("trials", 0) < t.trials
        if extends:
            (out / "best.json").unlink(missing_ok=True)  # an extension stopped midway must not read the old best
        elif stored != key:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
        if not (out / "best.json").is_file():
            stamp.write_text(json.dumps(key) + "\n")
            tune(config, t.trials, t.lr_range, validation_fraction=t.validation_fraction, seed=t.seed, jobs=n_jobs,
                 out_dir=out, progress=False)
            ran += t.trials - (stored.get("trials", 0) if extends else 0)
        best = json.loads((out / "best.json").read_text())
        for trial in read_rows(out / "trials.csv"):
            value = trial[best["metric"]]
            rows.append({"dataset": dataset, "model": model, "method": method, "lr": float(trial["lr"]),
                         "validation": math.nan if value in ("", None) or trial["state"] != "complete" else value,
                         "chosen": trial["trial"] == best["trial"]})
    return rows, ran


def corpus_floors(suite: Suite, jobs: list[Job]) -> list[dict[str, Any]]:
    """For each corpus (task lm) of the suite: the unigram and bigram models' test loss and the training tokens
    (:mod:`beyondbp.ngram`), on the data as the suite's first run of that corpus reads it."""
    rows = []
    for dataset in suite.datasets:
        config = next(job.config for job in jobs if job.config.dataset == dataset)
        if cached_data(config).task == "lm":
            rows.append({"dataset": dataset, **ngram_losses(cached_data(config))})
    return rows


def corpus_samples(suite: Suite, jobs: list[Job]) -> list[dict[str, Any]]:
    """One text per (corpus, model, method), from the run of the suite's first seed (:data:`.report.SAMPLE`)."""
    from ..generate import sample_run

    rows = []
    for job in jobs:
        if job.config.seed == suite.seeds[0] and cached_data(job.config).task == "lm":
            text = sample_run(job.out_dir, SAMPLE["prompt"], SAMPLE["tokens"], SAMPLE["temperature"],
                              seed=SAMPLE["seed"], data_dir=job.config.data_dir, device="cpu")
            rows.append({"dataset": job.config.dataset, "model": job.model, "method": job.method, "text": text})
    return rows


def corpus_extras(suite: Suite, jobs: list[Job], results_dir: Path) -> tuple[list[dict[str, Any]] | None, ...]:
    """For a suite with corpora: ``-floors.csv`` and ``-samples.csv``, written and returned (None, None without)."""
    floor_rows = corpus_floors(suite, jobs)
    if not floor_rows:
        return None, None
    sample_rows = corpus_samples(suite, jobs)
    write_rows(floor_rows, results_dir / f"{suite.name}-floors.csv")
    write_rows(sample_rows, results_dir / f"{suite.name}-samples.csv")
    return floor_rows, sample_rows


def collect_outcomes(jobs: list[Job], outcomes: list[dict[str, Any]], align: bool) -> tuple[list, dict, list, list]:
    """The finished runs as the suite's rows (final and best metric), test curves per (data set, model, metric)
    and method, alignment rows (where measured) and cost rows."""
    rows, curves, alignment_rows, cost_rows = [], {}, [], []
    for job, outcome in zip(jobs, outcomes):
        c = job.config
        metric = HEADLINE[cached_data(c).task][0]
        key = {"dataset": c.dataset, "model": job.model, "method": job.method, "seed": c.seed}
        if "diverged" in outcome:
            final = best = math.nan
        else:
            final, best = outcome[metric], outcome[f"best_{metric}"]
            history = [json.loads(line) for line in (job.out_dir / METRICS_NAME).read_text().splitlines()]
            curves.setdefault((c.dataset, job.model, metric), {}).setdefault(job.method, []).append(
                metric_curve(history, metric))
            cost_rows.append({**key, "seconds_per_epoch": outcome["train_seconds"] / c.epochs,
                              "joules_per_epoch": outcome["train_joules"] / c.epochs if "train_joules" in outcome
                              else "", "energy_source": outcome.get("energy_source", ""),
                              "step_memory_mb": outcome.get("step_memory_mb", ""),
                              "trainable_fraction": outcome.get("trainable_fraction", 1.0),
                              "comm_bytes_per_step": outcome.get("comm_bytes_per_step", 0.0)})
            if align:
                alignment_rows += [{**key, "layer": layer, "cosine": values["cosine"], "angle": values["angle"]}
                                   for layer, values in history[-1]["alignment"]["layers"].items()]
        rows.append({**key, "epochs": c.epochs, "metric": metric, "final": final, "best": best})
    return rows, curves, alignment_rows, cost_rows


def run_suite(suite: Suite, n_jobs: int = 1, runs_dir: Path = RUNS_DIR, results_dir: Path = RESULTS_DIR) -> Path:
    """Run the whole suite and write ``results_dir/SUITE.csv``, ``-lr.csv``, ``-cost.csv`` (training seconds
    per epoch, trainable fraction and bytes sent per step per run), ``.md``, ``-meta.json`` and plots (and
    ``-alignment.csv`` for a suite that measures alignment)."""
    started = time.time()
    runs_dir, results_dir = Path(runs_dir) / suite.name, Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    lr_rows, tuned = choose_learning_rates(suite, runs_dir, n_jobs)
    write_rows(lr_rows, results_dir / f"{suite.name}-lr.csv")
    chosen = {(r["dataset"], r["model"], r["method"]): r["lr"] for r in lr_rows if r["chosen"]}

    jobs = []
    for dataset, model, method in suite.cells():
        lr = chosen[(dataset, model, method)]
        epochs = suite.datasets[dataset]["epochs"]
        for seed in suite.seeds:
            jobs.append(Job(suite.config(dataset, model, method, seed, lr, epochs),
                            run_dir(runs_dir, dataset, model, method, f"seed{seed}-lr{lr:g}"),
                            model=model, method=method, align_every=epochs if suite.align else 0))
    outcomes, ran = execute(jobs, n_jobs, f"{suite.name}: runs")
    rows, curves, alignment_rows, cost_rows = collect_outcomes(jobs, outcomes, suite.align)
    write_suite_csv(rows, results_dir / f"{suite.name}.csv")
    write_rows(cost_rows, results_dir / f"{suite.name}-cost.csv")
    cost_rows = with_measured_memory(cost_rows, results_dir / f"{suite.name}-memory.csv")
    floor_rows, sample_rows = corpus_extras(suite, jobs, results_dir)
    if suite.align:
        write_rows(alignment_rows, results_dir / f"{suite.name}-alignment.csv")
    plot_suite(suite.name, curves, results_dir)
    plot_sweeps(suite, rows, results_dir)
    meta_path = results_dir / f"{suite.name}-meta.json"
    if tuned + ran == 0 and meta_path.is_file():  # nothing ran: the reports are rebuilt, the record stays
        meta = json.loads(meta_path.read_text())
    else:
        meta = {"suite": suite.name, "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": machine_description(), "jobs": n_jobs, "wall_seconds": round(time.time() - started)}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    (results_dir / f"{suite.name}.md").write_text(suite_markdown(suite, rows, lr_rows, meta, alignment_rows,
                                                                        cost_rows, floor_rows=floor_rows,
                                                                        sample_rows=sample_rows))
    return results_dir / f"{suite.name}.csv"

