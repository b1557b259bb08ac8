"""beyondbp tune: the search on a validation split, its reproducibility, pruning, and bad input."""

from __future__ import annotations

import csv
import json
import sysconfig
from pathlib import Path

import optuna
import pytest

import beyondbp as bb
from beyondbp.cli import main
from beyondbp.parallel_trials import report_to
from beyondbp.tune import PruningReporter, Range, tune

BASE = bb.RunConfig(method="dfa", dataset="digits", epochs=2, hidden=(32,), batch_size=100)


def test_tuning_keeps_the_best_validation_score_and_repeats_itself(tmp_path):
    first = tune(BASE, trials=4, lr_bounds=(1e-4, 3e-2), seed=1, out_dir=tmp_path / "a", progress=False)
    again = tune(BASE, trials=4, lr_bounds=(1e-4, 3e-2), seed=1, progress=False)
    assert first["trials"] == again["trials"]  # same command, same trials
    rows = list(csv.DictReader(open(tmp_path / "a" / "trials.csv")))
    assert len(rows) == 4 and all(1e-4 <= float(r["lr"]) <= 3e-2 for r in rows)
    done = [float(r["validation_accuracy"]) for r in rows if r["state"] == "complete"]
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert best["value"] == max(done) and best["settings"]["lr"] == first["best"]["settings"]["lr"]
    assert (tmp_path / "a" / "tune.png").is_file() and (tmp_path / "a" / "trials" / "000" / "summary.json").is_file()
    # scored on 10% of the 1437 training samples, not on the 360 test samples
    summary = json.loads((tmp_path / "a" / "trials" / "000" / "summary.json").read_text())
    assert summary["test_accuracy"] * 144 == pytest.approx(round(summary["test_accuracy"] * 144), abs=1e-6)


def test_a_parallel_search_repeats_itself(tmp_path):
    """Two trials at a time: proposals and pruning decisions do not depend on which thread finishes first."""
    first, again = (tune(BASE, trials=5, lr_bounds=(1e-4, 1.0), seed=2, jobs=2, progress=False) for _ in range(2))
    assert first["trials"] == again["trials"]
    assert [r["trial"] for r in first["trials"]] == list(range(5))
    assert {r["state"] for r in first["trials"]} >= {"complete", "pruned"}


def test_a_stopped_search_continues_and_a_finished_one_is_read_back(tmp_path):
    out, bounds = tmp_path / "t", (1e-4, 3e-2)
    tune(BASE, trials=2, lr_bounds=bounds, seed=1, out_dir=out, progress=False)
    first_runs = {n: (out / "trials" / n / "summary.json").stat().st_mtime_ns for n in ("000", "001")}
    # a process stopped during trial 2: the study holds it as running, its folder holds a partial run
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}")
    stopped = study.ask()
    stopped_lr = stopped.suggest_float("lr", *bounds, log=True)
    (out / "trials" / "002").mkdir()
    (out / "trials" / "002" / "checkpoint.pt").write_bytes(b"partial")
    result = tune(BASE, trials=4, lr_bounds=bounds, seed=1, out_dir=out, progress=False)
    numbers = [row["trial"] for row in result["trials"]]
    assert numbers == [0, 1, 3, 4]  # the stopped trial does not count; it is not queued again (see open_study)
    assert stopped_lr not in [row["lr"] for row in result["trials"]]
    assert not (out / "trials" / "002").exists() and result["best"]["trials"] == 4
    assert {n: (out / "trials" / n / "summary.json").stat().st_mtime_ns for n in ("000", "001")} == first_runs
    again = tune(BASE, trials=4, lr_bounds=bounds, seed=1, out_dir=out, progress=False)
    assert again["trials"] == result["trials"] and len(optuna.load_study(
        study_name="tune", storage=f"sqlite:///{out / 'study.db'}").trials) == 5  # nothing ran again
    with pytest.raises(bb.BeyondBPError, match="search made for other settings"):
        tune(BASE, trials=4, lr_bounds=(1e-3, 3e-2), seed=1, out_dir=out, progress=False)


def test_other_numeric_settings_are_searched_too(tmp_path):
    config = bb.RunConfig(method="bp", dataset="digits", epochs=1, hidden=(16,), optimizer="sgd")
    result = tune(config, trials=2, ranges=(Range.parse("momentum=0.5:0.95"), Range.parse("batch_size=20:80")),
                  progress=False)
    assert all(0.5 <= r["momentum"] <= 0.95 and 20 <= r["batch_size"] <= 80 and isinstance(r["batch_size"], int)
               for r in result["trials"])


def test_a_trial_below_the_median_is_stopped():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    earlier = study.ask()
    earlier.report(0.9, 1)
    study.tell(earlier, 0.9)
    reporter = PruningReporter(report_to(study.ask()), "test_accuracy")
    reporter.scalars({"epoch/lr": 0.1}, 1)  # other numbers are ignored
    with pytest.raises(optuna.TrialPruned):
        reporter.scalars({"epoch/test_accuracy": 0.2}, 1)


def test_bad_tuning_input_is_one_line(tmp_path, capsys):
    base = ["tune", "--method", "dfa", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "t")]
    for bad, message in [(["--lr-bounds", "1e-2,1e-4"], "0 < low < high"),
                         (["--lr-bounds=-1,1e-2"], "0 < low < high"),
                         (["--trials", "0"], "trials must be at least 1"),
                         (["--tune-param", "optimizer=1:2"], "'optimizer' is not a numeric setting"),
                         (["--tune-param", "nosuch=1:2"], "tunable: "),
                         (["--tune-param", "momentum=abc"], "reads NAME=LOW:HIGH"),
                         (["--tune-param", "momentum=0.9:0.5"], "low < high")]:
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_forward_gradient_trials_run_in_parallel(tmp_path):
    """Two fg trials at once, each in its own process (forward-mode AD keeps process-wide state)."""
    (tmp_path / "corpus.txt").write_text((Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()[:30000])
    config = bb.RunConfig(method="fg:k4-mean-activities", model="gpt", depth=1, width=16, heads=2, mlp=32,
                          data=str(tmp_path / "corpus.txt"), context=16, epochs=1, batch_size=16)
    result = tune(config, trials=2, jobs=2, progress=False)
    assert result["best"]["trials"] == 2 and result["best"]["failed"] == 0
