"""AutoPQ-advanced: the joint search, its resumable study, the refusals, and the search spaces."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

from beyondbp.autopq.advanced import SURPLUS, AdvancedConfig, Objective, counted, run_advanced, stop_at_budget
from beyondbp.autopq.spaces import SPACES
from beyondbp.cli import main
from beyondbp.errors import BeyondBPError
from test_autopq import load_bw_folder, seasonal_series


def series_file(folder, days: int):
    path = folder / "load.csv"
    series = seasonal_series(days=days)
    pd.DataFrame({"when": series.time, "load": series.target}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def series_csv(tmp_path_factory):
    return series_file(tmp_path_factory.mktemp("series"), days=30)


@pytest.fixture(scope="module")
def long_series_csv(tmp_path_factory):
    """Long enough for conformal calibration (at least 200 validation windows)."""
    return series_file(tmp_path_factory.mktemp("series"), days=60)


def tiny(path, **settings) -> AdvancedConfig:
    return AdvancedConfig(**{"csv": str(path), "time": "when", "target": "load", "forecaster": "linear",
                             "search": ("linear", "svr"), "budget_trials": 6, "cinn_epochs": 2, "trials": 3,
                             "baselines": ("conformal",), "sampler": "faithful", **settings})


def test_the_search_reports_its_best_and_continues_to_a_larger_budget(series_csv, tmp_path):
    summary = run_advanced(tiny(series_csv, keep_default=False), tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    counted = [r for r in rows if r["state"] in ("complete", "pruned")]
    assert len(counted) == 6 and all(float(r["joules"]) > 0 for r in counted)
    finished = [float(r["validation_crps"]) for r in rows if r["state"] == "complete"]
    assert summary["best"]["validation_crps"] == min(finished)
    assert summary["best"]["forecaster"] in ("linear", "svr") and 0.01 <= summary["best"]["parameter"] <= 3
    assert all(0.01 <= float(r["parameter"]) <= 3 for r in counted)  # nested: each candidate's own σ, recorded
    assert set(summary["metrics"]) == {"advanced", "conformal"} and summary["default"]["forecaster"] == "linear"
    assert summary["energy_kwh"] > 0 and summary["energy_source"]
    assert (tmp_path / "trials.png").is_file() and (tmp_path / "default" / "summary.json").is_file()
    # the study lives on: a larger budget adds trials to the same study
    again = run_advanced(tiny(series_csv, budget_trials=8, keep_default=False), tmp_path, progress=False)
    assert sum(again["trials"].get(s, 0) for s in ("complete", "pruned")) == 8
    assert again["best"]["validation_crps"] <= summary["best"]["validation_crps"]


def test_a_study_refuses_other_settings_and_bad_budgets(series_csv, tmp_path):
    run_advanced(tiny(series_csv, budget_trials=1), tmp_path, progress=False)
    with pytest.raises(BeyondBPError, match="made for other settings"):
        run_advanced(tiny(series_csv, search=("linear",), budget_trials=1), tmp_path, progress=False)
    with pytest.raises(BeyondBPError, match="made for other settings"):
        run_advanced(tiny(series_csv, seed=5, budget_trials=1), tmp_path, progress=False)
    for bad, message in [({"budget_trials": 0}, "budget must be positive"),
                         ({"budget_seconds": 0.0}, "budget must be positive"),
                         ({"workers": 0}, "workers must be at least 1"),
                         ({"threads": 0}, "threads must be at least 1"),
                         ({"search": ("linear", "prophet")}, "unknown forecaster 'prophet' in the search space"),
                         ({"storage": "nosuchdatabase://nowhere"}, "cannot open the study storage")]:
        with pytest.raises(BeyondBPError, match=message):
            run_advanced(tiny(series_csv, **bad), tmp_path / "other", progress=False)


def test_cli_bad_input_is_one_line(series_csv, tmp_path, capsys):
    base = ["autopq-advanced", "--csv", str(series_csv), "--time", "when", "--target", "load",
            "--out", str(tmp_path / "o")]
    for bad, message in [(["--workers", "0"], "workers must be at least 1"),
                         (["--search", "mlp,prophet"], "unknown forecaster 'prophet'"),
                         (["--storage", "sqlite:////no/such/folder/x.db"], "cannot open the study storage")]:
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_a_trial_started_after_others_filled_the_budget_is_pruned_unrun(series_csv):
    """Budget 3: one finished trial and two running on other workers; this worker's next trial gives its
    place up unrun (pruned, not counted) and stops the worker."""
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    study.ask(), study.ask()  # running elsewhere
    objective = Objective(tiny(series_csv, budget_trials=3), splits=None, net=None)  # never reaches the fit
    study.optimize(objective, n_trials=5, callbacks=[stop_at_budget(3)])
    assert len(study.trials) == 4  # stopped after one
    late = study.trials[3]
    assert late.state == optuna.trial.TrialState.PRUNED and late.user_attrs[SURPLUS] and counted(study) == 1


def test_search_spaces_give_the_factories_their_keywords():
    from beyondbp.autopq import make_forecaster

    fixed = {"mlp.units_1": 50, "mlp.units_2": 5, "mlp.units_3": 20, "mlp.activation": "tanh", "mlp.batch_size": 64}
    assert SPACES["mlp"](optuna.trial.FixedTrial(fixed))["hidden"] == (50, 20)  # a width below 10: no layer
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for name, space in SPACES.items():
        for _ in range(3):
            make_forecaster(name, 0, **space(study.ask()))  # every drawn configuration builds


def test_suite_compares_default_and_advanced_with_their_energy(tmp_path, monkeypatch):
    from beyondbp.autopq import advanced_bench
    from beyondbp.autopq.advanced_bench import run_advanced_suite

    data = load_bw_folder(tmp_path / "data")
    suite = tmp_path / "autopq-advanced.toml"
    suite.write_text(f'datasets = ["Load-BW"]\nseeds = [1]\ndata_dir = "{data}"\n'
                     '[settings]\nsearch = ["linear", "naive"]\nbudget_trials = 3\ncinn_epochs = 2\ntrials = 2\n'
                     'sampler = "faithful"\n'
                     'forecaster = "naive"\nbaselines = []\n'
                     '[scaling]\ndataset = "Load-BW"\nbudget_trials = 2\nworkers = [1]\nthreads = ["auto", 1]\n')
    report = run_advanced_suite(path=suite, runs=tmp_path / "runs", results=tmp_path / "results").read_text()
    rows = list(csv.DictReader(open(tmp_path / "results" / "autopq-advanced.csv")))
    assert [r["configuration"] for r in rows] == ["default", "advanced"]
    assert all(float(r["energy_kwh"]) > 0 and r["energy_source"] in report for r in rows)
    assert "| Load-BW | naive |" in report and "of 1 data sets" in report
    assert "| auto | 1 | 2 (2) |" in report and "| 1 | 1 | 2 (2) |" in report  # threads, workers, trials
    assert (tmp_path / "results" / "crps-kwh.png").is_file()
    advanced = json.loads((tmp_path / "runs" / "Load-BW" / "seed1" / "advanced.json").read_text())
    assert float(rows[1]["test_crps"]) == pytest.approx(advanced["metrics"]["advanced"]["crps"])
    ensemble = advanced["metrics"]["advanced"]["crps_ensemble"]
    assert float(rows[1]["test_crps_ensemble"]) == pytest.approx(ensemble)
    assert f"{advanced['metrics']['advanced']['crps']:.4f} / {ensemble:.4f}" in report  # both estimators
    # another session, without the run folders: the finished data set and seed come from the results
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(advanced_bench, "run_advanced", lambda *a, **k: pytest.fail("ran again"))
    run_advanced_suite(path=suite, runs=tmp_path / "runs", results=tmp_path / "results")
    assert list(csv.DictReader(open(tmp_path / "results" / "autopq-advanced.csv"))) == rows
    assert advanced_bench.plan_changed(advanced_bench.load_advanced_suite(suite), tmp_path / "results") == []
    suite.write_text(suite.read_text().replace("budget_trials = 3", "budget_trials = 4"))
    changed = advanced_bench.plan_changed(advanced_bench.load_advanced_suite(suite), tmp_path / "results")
    assert changed == ["budget_trials: 3 -> 4"]  # the report says its tables were made with another plan


def test_a_changed_plan_drops_the_old_rows_and_reports_only_what_has_run(tmp_path, capsys):
    """Rows of another plan are never reported as this plan's; a suite in progress reports its finished pairs."""
    from beyondbp.autopq import advanced_bench

    suite = {"datasets": ["Load-BW", "PV"], "seeds": [1, 2], "settings": {}}
    results = tmp_path / "results"
    results.mkdir()
    (results / "plan.json").write_text(json.dumps({"settings": {"budget_trials": 1}}))
    for name in advanced_bench.REPORT_FILES:
        (results / name).write_text("of the earlier plan")
    assert advanced_bench.kept_rows(suite, results) == []
    assert sorted(p.name for p in results.iterdir()) == ["plan.json"] and "removed" in capsys.readouterr().err
    assert json.loads((results / "plan.json").read_text()) == advanced_bench.suite_plan(suite)
    row = {"dataset": "Load-BW", "seed": 1, "forecaster": "mlp", "chosen": "default", "test_crps": 0.2,
           "test_crps_ensemble": 0.19, "energy_kwh": 0.001, "energy_source": "estimate"}
    rows = [{**row, "configuration": "default"}, {**row, "configuration": "advanced", "test_crps": 0.1}]
    report = advanced_bench.advanced_markdown(suite, rows, [{"workers": 1}], None)
    assert "**In progress**: 1 of 4 (data set, seed) pairs" in report
    assert "| Load-BW (1 of 2 seeds) | mlp | 0.2000 / 0.1900 |" in report and "| PV" not in report
    assert "crps-kwh.png" not in report and "goal" not in report and "Workers" not in report


@pytest.mark.parametrize("sampler, grid", [("faithful", (0.01, 0.1, 1.0, 3.0)), ("mix", (0.01, 0.3, 0.7, 1.0))])
def test_nested_parameter_is_the_best_for_the_candidates_forecast(series_csv, tmp_path, sampler, grid):
    from beyondbp.autopq import make_forecaster
    from beyondbp.autopq.advanced import Objective, prepare

    config = tiny(series_csv, sampler=sampler)
    splits, net, _ = prepare(config, tmp_path, progress=False)
    objective = Objective(config, splits, net)
    value, best = objective.validation_crps(make_forecaster("linear"), None, 1.0)
    assert grid[0] <= best <= grid[-1]
    for other in grid:  # the line search's value beats a grid spanning the range
        crps, used = objective.validation_crps(make_forecaster("linear"), other, 1.0)
        assert used == other and value <= crps + 1e-9


def test_the_calibrated_sampler_is_the_default_and_calibrates_the_test_quantiles(long_series_csv, tmp_path):
    """mix+conformal: the candidate's validation score is cross-fitted, and the refitted best one's test band
    holds close to 80% of the test hours."""
    assert AdvancedConfig().sampler == "mix+conformal"
    summary = run_advanced(tiny(long_series_csv, sampler="mix+conformal", keep_default=False, budget_trials=3,
                                cinn_epochs=10, search=("linear",)), tmp_path, progress=False)
    assert 0.01 <= summary["best"]["parameter"] <= 1
    assert summary["metrics"]["advanced"]["coverage_80"] == pytest.approx(0.8, abs=0.1)


def test_line_search_finds_the_minimum_in_few_scores():
    from beyondbp.autopq.search import line_search_sigma

    calls = []
    sigma, value = line_search_sigma(lambda s: calls.append(s) or (math.log(s) - math.log(0.3)) ** 2)
    assert sigma == pytest.approx(0.3, rel=0.05) and value == pytest.approx(0.0, abs=1e-3) and len(calls) <= 20
    with pytest.raises(BeyondBPError, match="0 < low < high"):
        line_search_sigma(lambda s: s, (1.0, 0.5))


def test_the_default_configuration_is_kept_where_no_candidate_beats_it_on_validation():
    from beyondbp.autopq.advanced import choose

    trial = optuna.trial.create_trial(params={"forecaster": "linear", "linear.alpha": 2.0}, value=0.30,
                                      distributions={"forecaster": optuna.distributions.CategoricalDistribution(
                                          ["linear", "gbt"]), "linear.alpha": optuna.distributions.FloatDistribution(
                                          1e-3, 1e3, log=True)}, user_attrs={"parameter": 0.4})
    default = {"validation_crps": 0.25, "parameters": {"rho": 0.7}}
    config = AdvancedConfig(forecaster="mlp")
    assert choose(config, trial, default) == {"source": "default", "forecaster": "mlp", "hyperparameters": {},
                                              "parameter": 0.7, "validation_crps": 0.25, "trial": None}
    searched = choose(config, trial, {**default, "validation_crps": 0.35})
    assert searched["source"] == "search" and searched["hyperparameters"] == {"alpha": 2.0}
    assert searched["parameter"] == 0.4 and searched["validation_crps"] == 0.30
    assert choose(AdvancedConfig(keep_default=False), trial, default)["source"] == "search"


def test_a_setting_on_by_default_has_a_no_flag():
    from beyondbp.cli import build_parser
    from beyondbp.options import from_args

    base = ["autopq-advanced", "--dataset", "PV"]
    assert from_args(AdvancedConfig, build_parser().parse_args(base)).keep_default is True
    assert from_args(AdvancedConfig, build_parser().parse_args([*base, "--no-keep-default"])).keep_default is False


def test_a_trial_left_running_by_a_gone_worker_is_reclaimed(tmp_path):
    from optuna.trial import TrialState

    from beyondbp.autopq.workers import RECLAIMED, WORKER, reclaim_stale_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    for pid in (int(gone.stdout), os.getpid()):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr(WORKER, {"pid": pid, "host": host})
    assert reclaim_stale_trials(study) == 1  # the living worker's trial stays
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.RUNNING]  # nothing queued: two workers could both take it
    assert study.user_attrs[RECLAIMED] == 1 and reclaim_stale_trials(study) == 0


def test_a_trial_carries_its_worker_from_the_moment_it_exists():
    """The sampler marks a trial when it is asked for, before the objective runs: a worker killed in between
    still leaves a trial that the next start can reclaim."""
    from beyondbp.autopq.workers import WORKER, marking_sampler

    study = optuna.create_study(sampler=marking_sampler(0))
    study.ask()
    stored = study.get_trials(deepcopy=False)[0]
    assert stored.user_attrs[WORKER] == {"pid": os.getpid(), "host": socket.gethostname()}


@pytest.mark.slow
def test_a_worker_ends_with_the_process_that_started_it(tmp_path):
    child = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import os, time; from beyondbp.autopq.workers import die_with_parent; "
                  "die_with_parent(); open({str(child)!r}, 'w').write(str(os.getpid())); time.sleep(60)"])
time.sleep(60)
"""])
    for _ in range(100):
        if child.is_file() and child.read_text():
            break
        time.sleep(0.1)
    pid = int(child.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the worker outlived the process that started it")


def session_processes(session: int) -> list[int]:
    """The processes of a session (field 6 of /proc/PID/stat), alive or not yet reaped."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.split("/")[2]))
    return found


def ended(session: int, seconds: float = 10) -> bool:
    """Whether every process of ``session`` ends within ``seconds`` (workers and multiprocessing's resource
    tracker end with their parent, a moment after it)."""
    deadline = time.monotonic() + seconds
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not session_processes(session)


def completed_trials(out) -> int:
    """Complete trials in the study file, read without writing (opening it through Optuna would create its
    schema and race the search for it)."""
    if not (out / "study.db").is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # the schema is being created
        return 0


def test_processes_opening_a_new_study_file_at_once_all_succeed(tmp_path):
    """Five processes create one SQLite storage at the same moment (a search and workers started together):
    the race for its tables is retried, not reported."""
    code = ("import os, pathlib, sys, time; from beyondbp.autopq.advanced import open_storage; import optuna.storages; "
            "ready = pathlib.Path(sys.argv[2]); (ready / str(os.getpid())).touch()\n"
            "while len(list(ready.iterdir())) < 5: time.sleep(0.01)\n"
            "open_storage(sys.argv[1]); print('opened')")
    ready = tmp_path / "ready"  # each process marks itself imported here and waits for the others
    ready.mkdir()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    started = [subprocess.Popen([sys.executable, "-c", code, url, str(ready)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(5)]
    results = [process.communicate(timeout=120) for process in started]
    assert [out for out, _ in results] == ["opened\n"] * 5, [err for _, err in results]


@pytest.mark.slow
def test_a_search_killed_and_started_again_ends_at_its_budget_with_no_process_left(series_csv, tmp_path):
    """Two workers share one study. SIGKILL to all three processes at once, after the first trial; a start right
    after reclaims the trials left running and ends with exactly the budget counted, not one more. (Killing the
    main process alone ends its workers: test_a_worker_ends_with_the_process_that_started_it; the rest is this
    case. Both were run end to end by hand, 2026-12-05.)"""
    out = tmp_path / "search"
    command = [sys.executable, "-m", "beyondbp", "autopq-advanced", "--csv", str(series_csv), "--time", "when",
               "--target", "load", "--forecaster", "linear", "--search", "linear", "--budget-trials", "4",
               "--cinn-epochs", "2", "--trials", "3", "--baselines", "conformal", "--sampler", "faithful",
               "--workers", "2", "--no-progress", "--out", str(out)]
    log = tmp_path / "first.err"
    with open(log, "w") as err:
        first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 300
    while completed_trials(out) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, f"the search ended before it could be killed: {log.read_text()}"
    for pid in session_processes(first.pid):
        os.kill(pid, signal.SIGKILL)
    first.wait()
    assert ended(first.pid), "a worker outlived the killed search"
    again = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    summary = json.loads((out / "advanced.json").read_text())
    assert summary["trials"].get("complete", 0) + summary["trials"].get("pruned", 0) == 4, summary["trials"]
    assert summary["reclaimed"] == summary["trials"].get("fail", 0)
    assert ended(again.pid), "a process outlived the finished search"
