"""Suite ``autopq``: the paper's series × point forecasters × seeds, AutoPQ-default against the baselines.

``beyondbp bench autopq --jobs 2`` reads ``benchmarks/suites/autopq.toml`` (``datasets``, ``forecasters``,
``seeds``, ``data_dir`` and a table ``[settings]`` of :class:`~beyondbp.autopq.AutoPQConfig` fields) and runs
every combination into ``runs/bench/autopq/DATASET/FORECASTER/seedS``; the first forecaster's runs go first, and
the forecasters of one data set and seed share one cINN, kept in ``runs/bench/autopq/DATASET/cinn-seedS.pt``.
Each finished run's summary is recorded in ``benchmarks/results/autopq/runs/`` as it finishes; a run whose
folder or record holds the suite's settings is not run again, so a fresh clone goes on where another stopped.
It writes ``benchmarks/results/autopq/``: ``autopq.csv`` (one row per run and method), ``autopq.md`` (mean ±
std over seeds, the goal's verdict, the cost), ``meta.json`` and the fan chart and reliability plot of each
data set's first run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import statistics
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import BeyondBPError, show_warnings_in_one_line
from ..tables import write_rows
from .run import AutoPQConfig, completed_run, matching_summary, run_autopq

SUITE_PATH = Path("benchmarks") / "suites" / "autopq.toml"
RESULTS = Path("benchmarks") / "results" / "autopq"
RUNS = Path("runs") / "bench" / "autopq"
REPORTED = ("crps", "crps_ensemble", "pinball", "coverage_error", "coverage_80", "mae")
AGAINST_BASELINES = "crps-against-best-baseline.png"  # each method's test CRPS over the best baseline's
#: AutoPQ's rows: the chosen sampler and the paper's.
AUTOPQ, FAITHFUL = "autopq", "autopq-faithful"
ENERGY = ("energy_kwh", "energy_cost", "energy_source")


def load_autopq_suite(path: Path = SUITE_PATH) -> dict[str, Any]:
    if not path.is_file():
        raise BeyondBPError(f"no suite file {path}")
    suite = tomllib.loads(path.read_text())
    missing = {"datasets", "forecasters", "seeds"} - set(suite)
    if missing:
        raise BeyondBPError(f"suite {path} needs {', '.join(sorted(missing))}")
    for dataset in suite["datasets"]:  # check every setting before anything runs
        for forecaster in suite["forecasters"]:
            config(suite, dataset, forecaster, suite["seeds"][0]).validate()
    return suite


def config(suite: dict[str, Any], dataset: str, forecaster: str, seed: int) -> AutoPQConfig:
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in suite.get("settings", {}).items()}
    try:
        return AutoPQConfig(dataset=dataset, data_dir=suite.get("data_dir"), forecaster=forecaster, seed=seed,
                            **settings)
    except TypeError as error:
        raise BeyondBPError(f"suite autopq: {error}") from None


def _run_one(config: AutoPQConfig, out: Path, cinn_cache: Path, threads: int) -> int:
    """One run; the cINN of its data set and seed is read from ``cinn_cache`` where an earlier run left it."""
    torch.set_num_threads(threads)
    show_warnings_in_one_line()
    run_autopq(config, out, progress=False, cinn_cache=cinn_cache)
    return 1


def record_path(results: Path, cell: tuple[str, str, int]) -> Path:
    """Where the suite keeps a finished run's summary beside its tables (committed, so a fresh clone goes on
    from the runs finished elsewhere)."""
    dataset, forecaster, seed = cell
    return results / "runs" / f"{dataset}-{forecaster}-seed{seed}.json"


def finished(cell: tuple[str, str, int], config: AutoPQConfig, out: Path, results: Path) -> dict[str, Any] | None:
    """The summary of ``cell``'s finished run with ``config``'s settings: from its run folder ``out``, else
    from its record in ``results``; a run folder's summary is recorded there."""
    summary = completed_run(out, config)
    record = record_path(results, cell)
    if summary is None:
        return matching_summary(record, config)
    if matching_summary(record, config) != summary:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def run_autopq_suite(jobs: int = 1, path: Path = SUITE_PATH, runs: Path = RUNS, results: Path = RESULTS,
                     report_only: bool = False) -> Path:
    """Run what is not finished (unless ``report_only``) and report every finished run; the report names the
    runs still missing."""
    started = time.time()
    suite = load_autopq_suite(path)
    cells = [(d, f, s) for f in suite["forecasters"] for d in suite["datasets"] for s in suite["seeds"]]
    configs = {cell: config(suite, *cell) for cell in cells}
    outs = {cell: runs / cell[0] / cell[1] / f"seed{cell[2]}" for cell in cells}
    done = {cell: finished(cell, configs[cell], outs[cell], results) for cell in cells}
    pending = [] if report_only else [cell for cell in cells if done[cell] is None]
    jobs_of = {cell: (configs[cell], outs[cell], runs / cell[0] / f"cinn-seed{cell[2]}.pt") for cell in pending}
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    with tqdm(total=len(cells), initial=len(cells) - len(pending), desc="autopq suite", dynamic_ncols=True) as bar:
        if jobs <= 1:
            for cell, job in jobs_of.items():
                bar.update(_run_one(*job, threads))
                done[cell] = finished(cell, configs[cell], outs[cell], results)
        else:
            with ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_run_one, *job, threads): cell for cell, job in jobs_of.items()}
                for future in as_completed(futures):
                    bar.update(future.result())
                    cell = futures[future]
                    done[cell] = finished(cell, configs[cell], outs[cell], results)
    summaries = done
    missing = [cell for cell in cells if summaries[cell] is None]
    cells = [cell for cell in cells if summaries[cell] is not None]
    if not cells:
        raise BeyondBPError(f"suite autopq: none of its {len(missing)} runs has finished with the suite's settings;"
                            " `beyondbp bench autopq` runs them")
    rows = [{"dataset": d, "forecaster": f, "seed": s, "method": method, **{k: values[k] for k in REPORTED},
             "sampler": summaries[(d, f, s)]["sampler"] if method == AUTOPQ else "",
             "wall_seconds": summaries[(d, f, s)].get("cost_seconds", summaries[(d, f, s)]["wall_seconds"]),
             **{k: summaries[(d, f, s)].get(k, "") for k in ENERGY}}
            for (d, f, s) in cells for method, values in summaries[(d, f, s)]["metrics"].items()]
    results.mkdir(parents=True, exist_ok=True)
    write_rows(rows, results / "autopq.csv")
    for dataset in dict.fromkeys(d for d, f, s in cells if f == suite["forecasters"][0]):
        first = outs[next(c for c in cells if c[0] == dataset and c[1] == suite["forecasters"][0])]
        for picture in ("fan", "reliability"):  # a run known from its record only left its pictures here
            if (first / f"{picture}.png").is_file():
                shutil.copyfile(first / f"{picture}.png", results / f"{dataset}-{picture}.png")
    meta_path = results / "meta.json"
    missing_names = [f"{d}/{f}/seed{s}" for d, f, s in missing]
    stale = not meta_path.is_file() or json.loads(meta_path.read_text()).get("missing") != missing_names
    if pending or stale or report_only:
        meta = {"finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "jobs": jobs,
                "wall_seconds": round(time.time() - started), "runs": len(cells), "ran": len(pending),
                "missing": missing_names, "report_only": report_only}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    meta = json.loads(meta_path.read_text())
    from .plots import against_best_baseline_plot

    _, baselines, shown = method_names(rows)
    against_best_baseline_plot({cell: {m: values["crps"] for m, values in methods.items()}
                                for cell, methods in cell_means(suite, rows).items()},
                               shown, baselines, results / AGAINST_BASELINES)
    (results / "autopq.md").write_text(autopq_markdown(suite, rows, meta))
    return results / "autopq.md"


def autopq_section(results: Path, document_dir: Path) -> str:
    """The suite's report as a section of a document in ``document_dir`` (RESULTS.md)."""
    from ..tables import read_rows

    prefix = f"{results.relative_to(document_dir)}/" if results.is_relative_to(document_dir) else f"{results}/"
    return autopq_markdown(load_autopq_suite(), read_rows(results / "autopq.csv"),
                           json.loads((results / "meta.json").read_text()), heading="##", image_prefix=prefix)


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def overview_row(cell: tuple[str, str], means: dict[str, dict[str, float]], methods: list[str], key: str,
                 verdict: str, chosen: str) -> str:
    """One (data set, forecaster) row of an overview: every method's test ``key``, the lowest in bold."""
    best = min(means[m][key] for m in methods)
    values = [f"**{means[m][key]:.4f}**" if means[m][key] == best else f"{means[m][key]:.4f}" for m in methods]
    return f"| {cell[0]} | {cell[1]} | {' | '.join(values)} | {verdict} | {chosen} |"


def method_row(method: str, mine: list[dict[str, Any]]) -> str:
    """One method's row of a cell's table: its scores (mean ± std over seeds), and AutoPQ's time and energy."""
    cost = energy = ""
    if method == AUTOPQ:
        cost = f"{statistics.mean(r['wall_seconds'] for r in mine):.0f}"
        measured = [r for r in mine if r.get("energy_kwh") not in (None, "")]
        energy = (f"{statistics.mean(float(r['energy_kwh']) for r in measured) * 1000:.3g} "
                  f"({statistics.mean(float(r['energy_cost']) for r in measured):.2g})"
                  if len(measured) == len(mine) else "not measured")
    scores = " | ".join(_mean_std([r[k] for r in mine]) for k in REPORTED)
    return f"| {method} | {scores} | {cost} | {energy} |"


def header(suite: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any], heading: str) -> list[str]:
    """The report's title, what it measures, and how and when it ran."""
    sources = "; ".join(sorted({r["energy_source"] for r in rows if r.get("energy_source")}))
    return [f"{heading} Suite `autopq`", "",
            "AutoPQ-default against three baselines on the same point forecast: `autopq` is the sampler chosen "
            "on the validation windows (`--sampler auto`: the paper's, ours, with and without conformal "
            "calibration), `autopq-faithful` the paper's sampler as the authors run it. Scores on the test part, "
            "normalised scale, lower is better: `crps` ours (from the quantile function, trapezoidal over the 17 "
            "levels), `crps_ensemble` the authors' (the 17 quantiles as equally weighted ensemble members, "
            "`properscoring.crps_ensemble`; it favours narrow bands); coverage error = mean |empirical − "
            "nominal| over the levels; coverage 80 = share of test hours inside the 10–90% band.", "",
            (f"- Report: `beyondbp bench autopq --report-only` over the runs finished by earlier invocations of "
             f"`beyondbp bench autopq --jobs N` (NOTES.md says when and with how many jobs); suite file "
             f"`{SUITE_PATH}`." if meta.get("report_only") else
             f"- Command: `beyondbp bench autopq --jobs {meta['jobs']}`; suite file `{SUITE_PATH}`."),
            f"- Data sets {', '.join(suite['datasets'])}; forecasters {', '.join(suite['forecasters'])}; seeds "
            f"{', '.join(map(str, suite['seeds']))}; settings {suite.get('settings', {}) or 'the defaults'}.",
            (f"- Reported {meta['finished']}; {meta['runs']} runs finished." if meta.get("report_only") else
             f"- Finished {meta['finished']}; {meta['runs']} runs, the last invocation ran {meta['ran']} of them in "
             f"{meta['wall_seconds'] / 60:.0f} min with {meta['jobs']} job(s).")
            + (f" Not run yet (left out of every table): {', '.join(meta['missing'])}." if meta.get("missing") else ""),
            f"- Energy per run (AutoPQ's row: the whole run, its cINN's training included; the baselines reuse its "
            f"point forecast): {sources or 'not measured (runs from before energy was recorded)'}; cost at the "
            f"run's price per kWh.", ""]


def method_names(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """Every method in ``rows``, the baselines among them, and the order the report shows them in."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    baselines = [m for m in methods if not m.startswith(AUTOPQ)]
    return methods, baselines, [m for m in (AUTOPQ, FAITHFUL) if m in methods] + baselines


def cell_means(suite: dict[str, Any], rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict]]:
    """Per (data set, forecaster) that ran, in the suite's order: each method's scores, mean over seeds."""
    ran = {(r["dataset"], r["forecaster"]) for r in rows}
    methods = method_names(rows)[0]
    return {(d, f): {m: {k: statistics.mean(r[k] for r in rows
                                            if (r["dataset"], r["forecaster"], r["method"]) == (d, f, m))
                         for k in REPORTED} for m in methods}
            for d in suite["datasets"] for f in suite["forecasters"] if (d, f) in ran}


def choice_ceiling(suite: dict[str, Any], rows: list[dict[str, Any]], means: dict[tuple[str, str], dict[str, dict]],
                   baselines: list[str]) -> list[str]:
    """The goal's CRPS line with each run's sampler picked on the test set: not a method (the choice must not
    see the test set) but an upper bound on what any choice among the samplers that ran could reach
    (``means``: ``cell_means``; ``baselines``: ``method_names``'s)."""
    variants = {r["method"] for r in rows if r["method"].startswith(AUTOPQ + "-")}
    if not variants or not baselines:
        return []

    def ceiling(dataset: str, forecaster: str) -> float:
        seeds = {r["seed"] for r in rows if (r["dataset"], r["forecaster"]) == (dataset, forecaster)}
        return statistics.mean(min(r["crps"] for r in rows if (r["dataset"], r["forecaster"], r["seed"]) == (
            dataset, forecaster, seed) and r["method"] in variants) for seed in seeds)

    count = {f: sum(ceiling(d, f) < min(means[(d, f)][b]["crps"] for b in baselines)
                    for d in suite["datasets"] if (d, f) in means) for f in suite["forecasters"]}
    return ["", f"Its ceiling: with each run's sampler picked on the test set among the {len(variants)} that ran "
            "(an upper bound on any choice, not a method), AutoPQ's CRPS would be below every baseline's on "
            + ", ".join(f"{n} of {len(suite['datasets'])} ({f})" for f, n in count.items()) + "."]


def autopq_markdown(suite: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any],
                    heading: str = "#", image_prefix: str = "") -> str:
    """Overviews (test CRPS in both estimators per data set and forecaster, whether AutoPQ wins and which
    sampler it chose), then per data set and forecaster each method's scores (mean ± std over seeds), then
    the goal's verdict."""
    methods, baselines, shown = method_names(rows)
    means = cell_means(suite, rows)
    cells, ran = list(means), set(means)

    def wins(cell: tuple[str, str], key: str = "crps") -> tuple[bool, bool]:
        """AutoPQ's CRPS (estimator ``key``) below every baseline's; its coverage error no worse than the best
        baseline's."""
        mine = means[cell]
        beats = all(mine[AUTOPQ][key] < mine[b][key] for b in baselines)
        calibrated = not baselines or mine[AUTOPQ]["coverage_error"] <= min(mine[b]["coverage_error"]
                                                                            for b in baselines)
        return beats, calibrated

    def chosen(cell: tuple[str, str]) -> str:
        picks = [r["sampler"] for r in rows if (r["dataset"], r["forecaster"], r["method"]) == (*cell, AUTOPQ)]
        return ", ".join(f"{name} ×{picks.count(name)}" for name in dict.fromkeys(picks) if name)

    text = header(suite, rows, meta, heading)
    text += [f"![test CRPS against the best baseline's]({image_prefix}{AGAINST_BASELINES})", ""]
    for key, title in (("crps", "ours"), ("crps_ensemble", "the authors' ensemble estimator")):
        text += [f"{heading}# Overview: test CRPS, {title} (mean over seeds; lowest in bold)", "",
                 f"| data set | forecaster | {' | '.join(shown)} | AutoPQ wins | sampler chosen |",
                 "|---|---|" + "---|" * len(shown) + "---|---|"]
        for cell in cells:
            beats, calibrated = wins(cell, key)
            verdict = "yes" if beats and calibrated else ("CRPS only" if beats else "no")
            text.append(overview_row(cell, means[cell], shown, key, verdict, chosen(cell)))
        text.append("")
    for dataset, forecaster in cells:
        cell_rows = [r for r in rows if r["dataset"] == dataset and r["forecaster"] == forecaster]
        text += [f"{heading}# {dataset}, {forecaster}", "",
                 "| method | CRPS | CRPS (ensemble) | pinball | coverage error | coverage 80 | MAE of median "
                 "| s / run (with its cINN) | Wh / run (cost) |",
                 "|---|---|---|---|---|---|---|---|---|"]
        text += [method_row(method, [r for r in cell_rows if r["method"] == method]) for method in methods]
        if forecaster == suite["forecasters"][0]:
            text += ["", f"![{dataset} fan chart]({image_prefix}{dataset}-fan.png)"]
        beats, calibrated = wins((dataset, forecaster))
        ensemble = wins((dataset, forecaster), "crps_ensemble")[0]
        verdict = "no worse than" if calibrated else "worse than"
        text += ["", f"AutoPQ's CRPS is {'below' if beats else 'not below'} every baseline's (in the authors' "
                     f"estimator: {'below' if ensemble else 'not below'}); its coverage error is {verdict} the "
                     "best-calibrated baseline's.", ""]
    text += [f"{heading}# Goal", "", "AutoPQ (the sampler chosen on validation) below each baseline's CRPS, with a "
             "coverage error no worse than the best baseline's, on at least 4 of the 6 data sets with the same "
             "forecaster (mean over seeds):", ""]
    count = lambda f, key: sum(all(wins((d, f), key)) for d in suite["datasets"] if (d, f) in ran)
    text += [f"- {f}: {count(f, 'crps')} of {len(suite['datasets'])} data sets ({count(f, 'crps_ensemble')} in the "
             "authors' estimator)" for f in suite["forecasters"]]
    return "\n".join(text + choice_ceiling(suite, rows, means, baselines)) + "\n"
