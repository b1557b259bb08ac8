"""Suite ``autopq-advanced``: AutoPQ-advanced against AutoPQ-default on the paper's series, with the energy
each spent, and how the search scales with workers.

``beyondbp bench autopq-advanced --jobs J`` reads ``benchmarks/suites/autopq-advanced.toml``: ``datasets``,
``seeds``, ``data_dir``, a table ``[settings]`` of :class:`~beyondbp.autopq.advanced.AdvancedConfig` fields
(the search space, ``budget_trials``, ``workers`` …) and an optional table ``[scaling]`` (``dataset``,
``seed``, ``budget_trials``, ``workers``, a list such as ``[1, 2]``, and ``threads``, a list of threads per
worker such as ``["auto", 1]``, where ``"auto"`` shares the cores out among the workers). Every (data set, seed) runs
:func:`~beyondbp.autopq.advanced.run_advanced` into ``runs/bench/autopq-advanced/DATASET/seedS``
(resumable: the study continues to its budget and a finished AutoPQ-default run is reused). The scaling
runs search the same budget in fresh studies with each number of workers and time the search.

It writes ``benchmarks/results/autopq-advanced/``: ``autopq-advanced.csv`` (per data set, seed and
configuration: forecaster, validation and test CRPS, kWh, cost, how the energy was measured),
``scaling.csv``, ``crps-kwh.png`` (test CRPS against energy, one panel per data set) and
``autopq-advanced.md``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
import tomllib
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BeyondBPError
from ..tables import read_rows, write_rows
from .advanced import AdvancedConfig, counted, open_study, run_advanced

SUITE_PATH = Path("benchmarks") / "suites" / "autopq-advanced.toml"
RESULTS = Path("benchmarks") / "results" / "autopq-advanced"
RUNS = Path("runs") / "bench" / "autopq-advanced"


def load_advanced_suite(path: Path = SUITE_PATH) -> dict[str, Any]:
    if not path.is_file():
        raise BeyondBPError(f"no suite file {path}")
    suite = tomllib.loads(path.read_text())
    missing = {"datasets", "seeds"} - set(suite)
    if missing:
        raise BeyondBPError(f"suite {path} needs {', '.join(sorted(missing))}")
    for dataset in suite["datasets"]:
        advanced_config(suite, dataset, suite["seeds"][0]).validate()
    return suite


def advanced_config(suite: dict[str, Any], dataset: str, seed: int, **overrides: Any) -> AdvancedConfig:
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in suite.get("settings", {}).items()}
    try:
        return AdvancedConfig(dataset=dataset, data_dir=suite.get("data_dir"), seed=seed, **{**settings, **overrides})
    except TypeError as error:
        raise BeyondBPError(f"suite autopq-advanced: {error}") from None


def scaling_rows(suite: dict[str, Any], runs: Path, results: Path) -> list[dict[str, Any]]:
    """The same trial budget searched with each number of workers, in fresh studies; measured once."""
    plan = suite.get("scaling")
    if not plan:
        return []
    path = results / "scaling.csv"
    key = json.dumps({**plan, "settings": resolved_settings(suite)}, sort_keys=True)
    if path.is_file():
        kept = read_rows(path)
        if kept and all(r["plan"] == key for r in kept):
            return kept
    rows = []
    for threads in plan.get("threads", ["auto"]):
        for workers in plan["workers"]:
            out = runs / "scaling" / f"threads-{threads}" / f"workers{workers}"
            shutil.rmtree(out, ignore_errors=True)  # a timing needs a fresh study
            config = advanced_config(suite, plan["dataset"], plan.get("seed", 1), workers=workers,
                                     threads=None if threads == "auto" else threads,
                                     budget_trials=plan["budget_trials"], role="worker")
            started = time.perf_counter()
            run_advanced(config, out, progress=False)
            seconds = time.perf_counter() - started
            rows.append({"plan": key, "dataset": plan["dataset"], "threads": threads, "workers": workers,
                         "budget_trials": plan["budget_trials"],
                         "finished_trials": counted(open_study(config, out, create=False)), "wall_seconds": seconds})
    write_rows(rows, path)
    return rows


def resolved_settings(suite: dict[str, Any]) -> dict[str, Any]:
    """Every AutoPQ-advanced setting the suite runs with, defaults included (a changed default changes the
    plan), less the data set and seed."""
    config = asdict(advanced_config(suite, suite["datasets"][0], suite["seeds"][0]))
    ignored = ("dataset", "seed", "threads")  # threads change only the speed
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in ignored}))


def suite_plan(suite: dict[str, Any]) -> dict[str, Any]:
    """What decides the suite's numbers: its data, seeds and every setting."""
    return {**{k: suite.get(k) for k in ("datasets", "seeds", "data_dir")}, "settings": resolved_settings(suite)}


def plan_changed(suite: dict[str, Any], results: Path) -> list[str]:
    """The settings whose value in the suite file differs from the plan the results in ``results`` were made
    with (``plan.json``), as ``name: then -> now``."""
    plan_path = results / "plan.json"
    if not plan_path.is_file():
        return []
    flat = lambda plan: {**{k: v for k, v in plan.items() if k != "settings"}, **plan["settings"]}
    then, now = flat(json.loads(plan_path.read_text())), flat(suite_plan(suite))
    return [f"{k}: {then.get(k, 'absent')} -> {now.get(k, 'absent')}" for k in sorted(set(then) | set(now))
            if then.get(k, "absent") != now.get(k, "absent")]


def kept_rows(suite: dict[str, Any], results: Path) -> list[dict[str, Any]]:
    """Rows of an earlier invocation with the same plan (data, seeds, every setting), so that a suite
    interrupted in one session continues in the next even without its run folders; ``plan.json`` records
    the plan."""
    plan = suite_plan(suite)
    plan_path, csv_path = results / "plan.json", results / "autopq-advanced.csv"
    same = plan_path.is_file() and json.loads(plan_path.read_text()) == plan
    if not same:
        drop_report(results)
    results.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    return read_rows(csv_path) if same and csv_path.is_file() else []


REPORT_FILES = ("autopq-advanced.csv", "autopq-advanced.md", "crps-kwh.png", "meta.json")


def drop_report(results: Path) -> None:
    """Remove the rows and report of another plan, so that none of them is read as this plan's (a report in
    progress shows the finished rows of its own plan only)."""
    stale = [results / name for name in REPORT_FILES if (results / name).is_file()]
    if stale:
        print(f"beyondbp: the suite's settings differ from those of the results in {results}; their rows and "
              "report are removed (copy the folder first to keep them)", file=sys.stderr)
    for path in stale:
        path.unlink()


def run_advanced_suite(path: Path = SUITE_PATH, runs: Path = RUNS, results: Path = RESULTS) -> Path:
    started = time.time()
    suite = load_advanced_suite(path)
    kept = kept_rows(suite, results)
    rows = []
    for dataset in suite["datasets"]:
        for seed in suite["seeds"]:
            done = [r for r in kept if r["dataset"] == dataset and int(r["seed"]) == seed]
            if len(done) == 2:  # default and advanced, from an earlier invocation
                rows += done
                continue
            config = advanced_config(suite, dataset, seed)
            summary = run_advanced(config, runs / dataset / f"seed{seed}", progress=True)
            default = summary["default"]
            rows.append({"dataset": dataset, "seed": seed, "configuration": "default", "chosen": "default",
                         "forecaster": default["forecaster"], "validation_crps": default["validation_crps"],
                         "test_crps": default["test_crps"], "test_crps_ensemble": default["test_crps_ensemble"],
                         "energy_kwh": default["energy_kwh"],
                         "energy_cost": default["energy_kwh"] * config.price_per_kwh,
                         "energy_source": summary["energy_source"]})
            rows.append({"dataset": dataset, "seed": seed, "configuration": "advanced",
                         "chosen": summary["best"]["source"], "forecaster": summary["best"]["forecaster"],
                         "validation_crps": summary["best"]["validation_crps"],
                         "test_crps": summary["metrics"]["advanced"]["crps"],
                         "test_crps_ensemble": summary["metrics"]["advanced"]["crps_ensemble"],
                         "energy_kwh": summary["energy_kwh"],
                         "energy_cost": summary["energy_cost"], "energy_source": summary["energy_source"]})
            results.mkdir(parents=True, exist_ok=True)
            write_rows(rows, results / "autopq-advanced.csv")  # kept as each data set and seed finishes
    scaling = scaling_rows(suite, runs, results)
    from .plots import crps_kwh_plot

    crps_kwh_plot(rows, results / "crps-kwh.png")
    meta = {"finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "wall_seconds": round(time.time() - started)}
    (results / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (results / "autopq-advanced.md").write_text(advanced_markdown(suite, rows, scaling, meta))
    return results / "autopq-advanced.md"


def advanced_section(results: Path, document_dir: Path) -> str:
    """The suite's report as a section of a document in ``document_dir`` (RESULTS.md)."""
    prefix = f"{results.relative_to(document_dir)}/" if results.is_relative_to(document_dir) else f"{results}/"
    scaling = read_rows(results / "scaling.csv") if (results / "scaling.csv").is_file() else []
    meta_path = results / "meta.json"
    suite = load_advanced_suite()
    return advanced_markdown(suite, read_rows(results / "autopq-advanced.csv"), scaling,
                             json.loads(meta_path.read_text()) if meta_path.is_file() else None, heading="##",
                             image_prefix=prefix, changed=plan_changed(suite, results))


def chosen(row: dict[str, Any]) -> str:
    """The advanced configuration's forecaster, marked where it is AutoPQ-default's configuration."""
    return row["forecaster"] + (" (default's)" if row.get("chosen") == "default" else "")


def both_crps(rows: list[dict[str, Any]]) -> str:
    """Mean test CRPS of ``rows`` in both estimators, ``ours / ensemble`` (rows written before the ensemble
    estimator was recorded show ``–`` for it)."""
    ours = statistics.mean(float(r["test_crps"]) for r in rows)
    ensemble = [r.get("test_crps_ensemble", "") for r in rows]
    if "" in ensemble or None in ensemble:
        return f"{ours:.4f} / –"
    return f"{ours:.4f} / {statistics.mean(float(v) for v in ensemble):.4f}"


def advanced_header(suite: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any] | None, heading: str,
                    image_prefix: str, changed: list[str]) -> list[str]:
    """The report's title, settings and state: finished (``meta``), or in progress (``meta`` is None: the
    suite writes it when every data set and seed has run)."""
    settings = suite.get("settings", {})
    sources = "; ".join(sorted({r["energy_source"] for r in rows}))
    pairs = len(suite["datasets"]) * len(suite["seeds"])
    state = (f"- Finished {meta['finished']}; the last invocation took {meta['wall_seconds'] / 60:.0f} min."
             if meta else f"- **In progress**: {len(rows) // 2} of {pairs} (data set, seed) pairs have run with "
             "these settings; `beyondbp bench autopq-advanced` continues it. The table shows those.")
    return [f"{heading} Suite `autopq-advanced`", "",
            "AutoPQ-advanced (forecaster, hyperparameters and σ searched together) against AutoPQ-default (one "
            "forecaster at its defaults, σ searched), test CRPS on the normalised scale (lower is better), and the "
            "energy each configuration took, its cINN's training included.", "",
            f"- Command: `beyondbp bench autopq-advanced`; suite file `{SUITE_PATH}`; data sets "
            f"{', '.join(suite['datasets'])}; seeds {', '.join(map(str, suite['seeds']))}; settings {settings}.",
            *([f"- **Made with an earlier plan** (`{image_prefix}plan.json`); the suite file has changed since "
               f"({'; '.join(changed)}), and `beyondbp bench autopq-advanced` runs it again."] if changed else []),
            f"- Energy: {sources}.", state, "",
            "CRPS: ours (the pinball loss integrated over the levels) / the authors' (an ensemble CRPS of the 17 "
            "quantiles as equally weighted members).", ""]


def advanced_markdown(suite: dict[str, Any], rows: list[dict[str, Any]], scaling: list[dict[str, Any]],
                      meta: dict[str, Any] | None, heading: str = "#", image_prefix: str = "",
                      changed: list[str] = ()) -> str:
    """The suite's report; ``meta`` None while the suite is in progress; ``changed`` lists the settings the
    suite file has changed since the results were made (:func:`plan_changed`)."""
    mean = lambda values: statistics.mean(float(v) for v in values)
    text = advanced_header(suite, rows, meta, heading, image_prefix, list(changed))
    text += ["| data set | default: forecaster | default CRPS | default Wh | advanced: best forecasters | "
             "advanced CRPS | advanced Wh | advanced better |", "|---|---|---|---|---|---|---|---|"]
    wins = 0
    for dataset in suite["datasets"]:
        default = [r for r in rows if r["dataset"] == dataset and r["configuration"] == "default"]
        advanced = [r for r in rows if r["dataset"] == dataset and r["configuration"] == "advanced"]
        if not default:
            continue  # in progress: not run yet
        better = mean(r["test_crps"] for r in advanced) < mean(r["test_crps"] for r in default)
        wins += better
        seeds = "" if meta else f" ({len(default)} of {len(suite['seeds'])} seeds)"
        text.append(f"| {dataset}{seeds} | {default[0]['forecaster']} | {both_crps(default)} | "
                    f"{mean(r['energy_kwh'] for r in default) * 1000:.3g} | "
                    f"{', '.join(dict.fromkeys(chosen(r) for r in advanced))} | {both_crps(advanced)} | "
                    f"{mean(r['energy_kwh'] for r in advanced) * 1000:.3g} | {'yes' if better else 'no'} |")
    if meta:
        text += ["", f"![test CRPS against energy]({image_prefix}crps-kwh.png)", "",
                 f"AutoPQ-advanced's test CRPS is below AutoPQ-default's on {wins} of {len(suite['datasets'])} data "
                 "sets (goal: 4 of 6).", ""]
    else:
        text.append("")
    if scaling and meta:  # measured after every data set and seed
        text += [f"{heading}# Workers", "", "The same trial budget in fresh studies on one data set; threads per "
                 "worker 'auto' shares the machine's cores out among the workers (one worker uses them all).", "",
                 "| threads per worker | workers | trials (budget) | wall time (s) | against 1 worker |",
                 "|---|---|---|---|---|"]
        for r in scaling:
            threads = r.get("threads", "auto")
            one = next(float(o["wall_seconds"]) for o in scaling
                       if int(o["workers"]) == 1 and o.get("threads", "auto") == threads)
            text.append(f"| {threads} | {r['workers']} | {r.get('finished_trials', '?')} ({r['budget_trials']}) | "
                        f"{float(r['wall_seconds']):.0f} | {float(r['wall_seconds']) / one:.2f}× |")
        text.append("")
    return "\n".join(text) + "\n"
