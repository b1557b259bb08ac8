"""The benchmark harness on a tiny suite: selection on validation data, resumable runs, reports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from beyondbp.bench import load_suite, run_suite, write_results_md
from beyondbp.bench.report import gap_closed, gap_lines, model_sweep_lines, sweep_points
from beyondbp.errors import BeyondBPError

TINY = """
description = "tiny"
width = 16
depths = [1]
seeds = [1, 2]
methods = ["bp", "drtp", "f3:delayed_error"]
goal_gap_closed = 0.5
[datasets.digits]
epochs = 4
[tuning]
lrs = [1e-3, 1e-2]
epochs_fraction = 0.5
"""


def test_gap_closed_for_accuracy_and_error():
    assert gap_closed(0.96, 0.90, 0.98) == pytest.approx(0.75)
    assert gap_closed(2.0, 3.0, 1.0, larger_is_better=False) == pytest.approx(0.5)  # MAE: the same formula
    assert math.isnan(gap_closed(0.9, 0.9, 0.9))
    assert math.isnan(gap_closed(46.9, 45.4, 47.5, larger_is_better=False))  # BP worse than DRTP: no gap


def test_no_verdict_without_a_gap():
    lines = gap_lines({"bp": 47.5, "drtp": 45.4, "f3:a": 46.9}, goal=0.9, larger_is_better=False)
    assert "| f3:a | n/a |" in lines[2] and "no gap to close" in lines[-1]


def test_no_verdict_when_the_gap_is_within_the_seed_spread():
    means = {"bp": 0.9778, "drtp": 0.9741, "f3:a": 0.9778}
    lines = gap_lines(means, goal=0.56, spreads={"bp": 0.0028, "drtp": 0.0016, "f3:a": 0.0028})
    assert "| f3:a | 100% |" in lines[2] and lines[-1].endswith("no verdict.")
    assert gap_lines(means, goal=0.56, spreads={"bp": 0.001, "drtp": 0.001, "f3:a": 0.0})[-1].endswith("**met**.")


def test_gap_lines_give_the_verdict():
    lines = gap_lines({"bp": 0.98, "drtp": 0.90, "dfa": 0.94, "f3:a": 0.92, "f3:b": 0.96}, goal=0.56)
    assert "| f3:b | 75% | 50% |" in lines
    assert lines[-1].endswith("f3:b: 75%, goal **met**.")


def test_unknown_and_malformed_suites(tmp_path):
    (tmp_path / "bad.toml").write_text('description = "x"\nunknown_key = 1\n')
    with pytest.raises(BeyondBPError, match="known suites: bad"):
        load_suite("nope", suites_dir=tmp_path)
    with pytest.raises(BeyondBPError, match="malformed"):
        load_suite("bad", suites_dir=tmp_path)


def test_a_suite_extends_another_with_a_search_for_its_grid(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "tiny-tuned.toml").write_text('extends = "tiny"\ndescription = "tuned"\n'
                                              'tune = { lr = [1e-4, 1e-2], trials = 5 }\n')
    tuned, base = load_suite("tiny-tuned", suites_dir=tmp_path), load_suite("tiny", suites_dir=tmp_path)
    assert (tuned.name, tuned.description) == ("tiny-tuned", "tuned")
    assert (tuned.methods, tuned.models, tuned.seeds, tuned.datasets) == (base.methods, base.models, base.seeds,
                                                                          base.datasets)
    assert tuned.tuning.lrs == () and tuned.tuning.lr_range == (1e-4, 1e-2) and tuned.tuning.trials == 5
    assert tuned.tuning.epochs_fraction == 0.5  # the rest of the base's [tuning] stays
    (tmp_path / "chain.toml").write_text('extends = "tiny-tuned"\n')
    with pytest.raises(BeyondBPError, match="one level only"):
        load_suite("chain", suites_dir=tmp_path)
    (tmp_path / "orphan.toml").write_text('extends = "nope"\n')
    with pytest.raises(BeyondBPError, match="extends unknown suite 'nope'"):
        load_suite("orphan", suites_dir=tmp_path)


def test_tiny_suite_end_to_end(tmp_path):
    suites, runs, results = tmp_path / "suites", tmp_path / "runs", tmp_path / "benchmarks" / "results"
    suites.mkdir()
    (suites / "tiny.toml").write_text(TINY)
    suite = load_suite("tiny", suites_dir=suites)
    csv_path = run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)

    rows = list(csv.DictReader(open(csv_path)))
    assert list(rows[0]) == ["dataset", "model", "method", "seed", "epochs", "metric", "final", "best"]
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("bp", "1"), ("bp", "2"), ("drtp", "1"), ("drtp", "2"), ("f3:delayed_error", "1"), ("f3:delayed_error", "2")]
    assert all(r["model"] == "mlp-1x16" and r["epochs"] == "4" and float(r["final"]) > 0.5 for r in rows)

    lr_rows = list(csv.DictReader(open(results / "tiny-lr.csv")))
    assert len(lr_rows) == 6 and sum(r["chosen"] == "True" for r in lr_rows) == 3
    # the chosen lr is the one with the best validation accuracy, and the runs used it
    for method in ("bp", "drtp", "f3:delayed_error"):
        cell = [r for r in lr_rows if r["method"] == method]
        best = max(cell, key=lambda r: float(r["validation"]))
        assert best["chosen"] == "True"
        folder = runs / "tiny" / "digits" / "mlp-1x16" / method.replace(":", "-")
        assert (folder / f"seed1-lr{float(best['lr']):g}" / "summary.json").is_file()

    # tuning evaluated on 10% of the training set (digits: 1437 -> 144), not on the test set (360)
    tune = runs / "tiny" / "digits" / "mlp-1x16" / "bp" / "tune-lr0.001"
    assert (tune / "summary.json").is_file()
    from beyondbp.data import load_dataset, validation_split
    assert len(validation_split(load_dataset("digits"), 0.1, 0).test) == 144

    # a second call runs nothing again
    stamp = (tune / "checkpoint.pt").stat().st_mtime_ns
    run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)
    assert (tune / "checkpoint.pt").stat().st_mtime_ns == stamp

    md = write_results_md(results, tmp_path / "benchmarks" / "RESULTS.md", suites_dir=suites).read_text()
    assert "## Suite `tiny`" in md and "| f3:delayed_error |" in md and "gap to BP closed" in md
    assert "![digits mlp-1x16](results/tiny-digits-mlp-1x16.png)" in md
    assert (results / "tiny-digits-mlp-1x16.png").is_file()
    # every method's training energy per epoch, against the first method, with how it was measured
    costs = list(csv.DictReader(open(results / "tiny-cost.csv")))
    assert all(float(r["joules_per_epoch"]) > 0 and r["energy_source"] for r in costs)
    bp_row = next(line for line in md.splitlines() if line.startswith("| bp |"))
    assert bp_row.endswith("(1.00×) |") and "J / epoch (× first)" in md and costs[0]["energy_source"] in md
    # and its step memory (the suite's runs recorded it)
    assert all(float(r["step_memory_mb"]) > 0 for r in costs) and "| step MB |" in md

    # an edited suite does not report its old runs under its new settings
    (suites / "tiny.toml").write_text(TINY.replace('width = 16', 'width = 16\nactivation = "relu"'))
    with pytest.raises(BeyondBPError, match=r"made with other settings \(activation\).*delete that folder"):
        run_suite(load_suite("tiny", suites_dir=suites), n_jobs=1, runs_dir=runs, results_dir=results)


SWEEP = """
description = "models, variants, alignment and a sweep"
activation = "relu"
seeds = [1]
methods = ["bp", "dfa", "ldfa:r2", "ldfa:r4", "bp-oialr"]
align = true
sweep = { over = "method", pattern = "ldfa:r(\\\\d+)", label = "rank r" }
[models.narrow]
hidden = [64, 2, 64]
[variants.bp-oialr]
method = "bp"
lowrank = "oialr"
oialr_start = 5
oialr_every = 5
oialr_cutoff = 0.5
[datasets.digits]
epochs = 2
[tuning]
lrs = [1e-2]
"""


def test_suite_with_model_tables_variants_alignment_and_a_sweep(tmp_path):
    suites, runs, results = tmp_path / "suites", tmp_path / "runs", tmp_path / "results"
    suites.mkdir()
    (suites / "sweep.toml").write_text(SWEEP)
    suite = load_suite("sweep", suites_dir=suites)
    config = suite.config("digits", "narrow", "bp-oialr", 1, 1e-2, 2)
    assert (config.method, config.lowrank, config.hidden, config.activation) == ("bp", "oialr", (64, 2, 64), "relu")
    run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)

    rows = list(csv.DictReader(open(results / "sweep.csv")))
    assert [r["method"] for r in rows] == ["bp", "dfa", "ldfa:r2", "ldfa:r4", "bp-oialr"]
    assert json.loads((runs / "sweep" / "digits" / "narrow" / "bp-oialr" / "seed1-lr0.01" / "summary.json")
                      .read_text())["trainable_fraction"] < 1
    alignment = list(csv.DictReader(open(results / "sweep-alignment.csv")))
    bp_cosines = [float(r["cosine"]) for r in alignment if r["method"] == "bp"]
    assert len(bp_cosines) == 4 and all(c == pytest.approx(1.0, abs=1e-5) for c in bp_cosines)
    assert any(float(r["cosine"]) < 0.99 for r in alignment if r["method"] == "dfa")
    assert (results / "sweep-digits-narrow-sweep.png").is_file()
    md = (results / "sweep.md").read_text()
    assert "alignment with backprop after the last epoch" in md and "sweep-digits-narrow-sweep.png" in md


def test_suite_settings_name_only_the_variants_it_runs(tmp_path):
    (tmp_path / "unused.toml").write_text(SWEEP.replace('methods = ["bp", "dfa", "ldfa:r2", "ldfa:r4", "bp-oialr"]',
                                                        'methods = ["bp", "dfa"]'))
    assert "bp-oialr" not in load_suite("unused", suites_dir=tmp_path).settings_text()
    (tmp_path / "used.toml").write_text(SWEEP)
    assert "`bp-oialr`: method bp, lowrank oialr" in load_suite("used", suites_dir=tmp_path).settings_text()


def test_malformed_suite_settings_are_named(tmp_path):
    (tmp_path / "typo.toml").write_text(SWEEP.replace('activation = "relu"', 'activaton = "relu"'))
    with pytest.raises(BeyondBPError, match="unknown run settings activaton"):
        load_suite("typo", suites_dir=tmp_path)


@pytest.mark.slow
def test_a_suite_variant_runs_data_parallel_on_two_processes(tmp_path):
    (tmp_path / "ddp.toml").write_text("""
description = "one process and two"
width = 16
depths = [1]
seeds = [1]
methods = ["bp", "bp-2"]
[variants.bp-2]
method = "bp"
nproc = 2
[datasets.digits]
epochs = 2
[tuning]
lrs = [1e-2]
""")
    suite = load_suite("ddp", suites_dir=tmp_path)
    run_suite(suite, n_jobs=1, runs_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    rows = {r["method"]: float(r["final"]) for r in csv.DictReader(open(tmp_path / "results" / "ddp.csv"))}
    assert rows["bp"] > 0.8 and rows["bp-2"] > 0.8
    cost = {r["method"]: float(r["comm_bytes_per_step"])
            for r in csv.DictReader(open(tmp_path / "results" / "ddp-cost.csv"))}
    params = 64 * 16 + 16 + 16 * 10 + 10
    assert cost == {"bp": 0.0, "bp-2": 4 * (params + 2)}  # the gradient, the loss and the sample count
    assert "bytes sent / step" in (tmp_path / "results" / "ddp.md").read_text()


def test_sweep_points_name_the_swept_method_and_keep_baselines():
    suite = SimpleNamespace(sweep={"over": "method", "pattern": r"ldfa:r(\d+)"})
    rows = [{"dataset": "digits", "model": "m", "method": method, "metric": "test_accuracy", "final": final}
            for method, final in [("ldfa:r2", 0.5), ("ldfa:r2", 0.7), ("ldfa:r16", 0.9), ("bp", 0.95)]]
    plot = sweep_points(suite, rows)["digits-m"]
    assert plot["points"] == {"ldfa:r": {2.0: [0.5, 0.7], 16.0: [0.9]}}
    assert plot["baselines"] == {"bp": [0.95]}


def test_model_sweep_table_puts_width_accuracy_and_alignment_side_by_side():
    suite = SimpleNamespace(sweep={"over": "model", "pattern": r"b(\d+)", "label": "width b"})
    rows = [{"dataset": "d", "model": model, "method": method, "metric": "test_accuracy", "final": final}
            for model, method, final in [("b1", "bp", 0.7), ("b1", "dfa", 0.4), ("full", "bp", 0.9),
                                         ("full", "dfa", 0.8)]]
    alignment = [{"dataset": "d", "model": model, "method": method, "layer": "1.0", "cosine": cosine}
                 for model, method, cosine in [("b1", "bp", "1.0"), ("b1", "dfa", "0.1"), ("full", "dfa", "0.7")]]
    lines = model_sweep_lines(suite, rows, alignment, "#")
    assert lines[2] == "| model | width b | bp | dfa | dfa cosine, layer 1.0 |"
    assert lines[4] == "| b1 | 1 | 0.7000 ± 0.0000 | 0.4000 ± 0.0000 | 0.1000 ± 0.0000 |"
    assert lines[5] == "| full | – | 0.9000 ± 0.0000 | 0.8000 ± 0.0000 | 0.7000 ± 0.0000 |"


def test_a_suite_searches_each_methods_learning_rate_with_the_same_budget(tmp_path):
    """tune = { lr, trials, epochs }: every method gets the same trials; the chosen lr is the trial with the
    best validation score; a second call searches nothing again."""
    suites, runs, results = tmp_path / "suites", tmp_path / "runs", tmp_path / "results"
    suites.mkdir()
    grid = "[tuning]\nlrs = [1e-3, 1e-2]\nepochs_fraction = 0.5\n"
    (suites / "searched.toml").write_text("tune = { lr = [1e-4, 3e-2], trials = 3, epochs = 1 }\n"
                                          + TINY.replace(grid, "").replace('seeds = [1, 2]', 'seeds = [1]')
                                          .replace('"bp", "drtp", "f3:delayed_error"', '"bp", "drtp"'))
    suite = load_suite("searched", suites_dir=suites)
    run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)
    lr_rows = list(csv.DictReader(open(results / "searched-lr.csv")))
    for method in ("bp", "drtp"):
        mine = [r for r in lr_rows if r["method"] == method]
        assert len(mine) == 3 and sum(r["chosen"] == "True" for r in mine) == 1
        scored = [r for r in mine if r["validation"] not in ("", "nan")]
        assert next(r for r in mine if r["chosen"] == "True") == max(scored, key=lambda r: float(r["validation"]))
    assert "Optuna's TPE between 0.0001 and 0.03 (log scale), 3 trials of 1 epochs" in (
        results / "searched.md").read_text()
    stamp = runs / "searched" / "digits" / "mlp-1x16" / "bp" / "tune" / "best.json"
    before = stamp.stat().st_mtime_ns
    run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)
    assert stamp.stat().st_mtime_ns == before
    # a search stopped before it wrote best.json continues from its stored trials instead of starting over
    trial = stamp.parent / "trials" / "000" / "summary.json"
    trial_before = trial.stat().st_mtime_ns
    stamp.unlink()
    run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)
    assert stamp.is_file() and trial.stat().st_mtime_ns == trial_before
    assert list(csv.DictReader(open(results / "searched-lr.csv"))) == lr_rows
    # more trials extend the finished search; fewer start it over, so every method keeps the same budget
    more = suites / "searched.toml"
    more.write_text(more.read_text().replace("trials = 3", "trials = 4"))
    run_suite(load_suite("searched", suites_dir=suites), n_jobs=1, runs_dir=runs, results_dir=results)
    extended = list(csv.DictReader(open(results / "searched-lr.csv")))
    assert trial.stat().st_mtime_ns == trial_before and len(extended) == 8
    assert [r["lr"] for r in extended if r["method"] == "bp"][:3] == [r["lr"] for r in lr_rows if r["method"] == "bp"]
    more.write_text(more.read_text().replace("trials = 4", "trials = 3"))
    run_suite(load_suite("searched", suites_dir=suites), n_jobs=1, runs_dir=runs, results_dir=results)
    assert trial.stat().st_mtime_ns != trial_before
    assert list(csv.DictReader(open(results / "searched-lr.csv"))) == lr_rows
    with pytest.raises(BeyondBPError, match="tune needs 0 < low < high"):
        (suites / "bad.toml").write_text("tune = { lr = [1e-2, 1e-4], trials = 3 }\n" + TINY.replace(grid, ""))
        load_suite("bad", suites_dir=suites)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path("benchmarks") / "suites").glob("*.toml")
                                        if not p.stem.startswith("autopq")))
def test_every_committed_suite_expands_to_valid_runs(name):
    suite = load_suite(name)
    for dataset, model, method in suite.cells():
        config = suite.config(dataset, model, method, suite.seeds[0], suite.tuning.first_lr(), 1)
        config.validate()
        own = set(suite.variants.get(method, {}))  # a variant's own settings must concern its method
        assert not own & set(config.inapplicable()), (model, method, own & set(config.inapplicable()))


def test_a_suite_report_with_a_diverged_run_says_so(tmp_path):
    """A run that diverged records a NaN metric; the suite's table says so instead of failing on its spread."""
    from beyondbp.bench.report import suite_markdown

    (tmp_path / "tiny.toml").write_text(TINY)
    suite = load_suite(str(tmp_path / "tiny.toml"))
    finals = {"bp": (0.9, 0.92), "drtp": (0.8, 0.82), "f3:delayed_error": (0.5, math.nan)}
    rows = [{"dataset": "digits", "model": "mlp-1x16", "method": method, "seed": seed, "epochs": 4,
             "metric": "test_accuracy", "final": final, "best": final}
            for method, values in finals.items() for seed, final in zip((1, 2), values)]
    meta = {"machine": "m", "finished": "f", "wall_seconds": 60, "jobs": 1}
    chosen = [{"dataset": "digits", "model": "mlp-1x16", "method": m, "lr": 1e-3, "chosen": True} for m in finals]
    text = suite_markdown(suite, rows, chosen, meta)
    assert "| f3:delayed_error | 0.001 | diverged in 1 of 2 runs |" in text
    assert "| bp | 0.001 | 0.9100 ± 0.0141 |" in text


def test_a_nan_cell_says_what_it_means():
    from beyondbp.tables import mean_std

    assert mean_std([0.5, 0.7]) == "0.6000 ± 0.1414"
    assert mean_std([0.5, math.nan]) == "diverged in 1 of 2 runs"
    assert mean_std([math.nan] * 3, nan="zero update or gradient") == "zero update or gradient in 3 of 3 runs"


def test_bench_loop_compares_the_trainer_with_a_plain_loop(tmp_path, capsys):
    from beyondbp.cli import main

    assert main(["bench", "loop", "--models", "mlp", "--samples", "256", "--rounds", "1", "--batch-size", "64",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "loop.csv")))
    assert [r["model"] for r in rows] == ["mlp"]
    ratio = float(rows[0]["ratio"])
    assert ratio == pytest.approx(float(rows[0]["beyondbp_samples_per_second"])
                                  / float(rows[0]["plain_samples_per_second"]))
    assert "| mlp |" in capsys.readouterr().out
    assert main(["bench", "loop", "--models", "vgg99", "--out", str(tmp_path)]) == 2


CORPUS_SUITE = """
description = "a corpus"
data = "{corpus}"
context = 16
model = "gpt"
depth = 1
width = 16
heads = 2
mlp = 32
seeds = [1]
methods = ["bp", "dfa"]

[models.gpt-tiny]
model = "gpt"

[datasets.argparse]
epochs = 1

[tuning]
lrs = [1e-3]
"""


def test_a_corpus_suite_reports_the_ngram_floors_and_a_sample_per_method(tmp_path):
    import sysconfig

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()[:20000])
    suites, runs, results = tmp_path / "suites", tmp_path / "runs", tmp_path / "results"
    suites.mkdir()
    (suites / "corpus.toml").write_text(CORPUS_SUITE.format(corpus=corpus))
    suite = load_suite("corpus", suites_dir=suites)
    assert suite.config("argparse", "gpt-tiny", "bp", 1, 1e-3, 1).width == 16  # a shared width beside model tables
    run_suite(suite, n_jobs=1, runs_dir=runs, results_dir=results)
    floors = list(csv.DictReader(open(results / "corpus-floors.csv")))
    assert len(floors) == 1 and float(floors[0]["bigram"]) < float(floors[0]["unigram"])
    rows = {r["method"]: float(r["final"]) for r in csv.DictReader(open(results / "corpus.csv"))}
    md = (results / "corpus.md").read_text()
    assert f"| bp | {rows['bp'] / math.log(2):.3f} |" in md  # bits per token
    assert "unigram" in md and "**dfa**" in md and "```text" in md


def test_bench_memory_measures_each_method_and_fills_the_suite_table_of_runs_that_lack_it(tmp_path):
    """Two batches per method with the suite's settings; its first method is the ratio's reference; a suite's
    cost rows without ``step_memory_mb`` (runs from before it was recorded) take the measured value."""
    from beyondbp.bench.memory import run_memory_bench
    from beyondbp.bench.report import with_measured_memory

    (tmp_path / "tiny.toml").write_text(TINY)
    path = run_memory_bench(load_suite(str(tmp_path / "tiny.toml")), tmp_path / "results", device="cpu")
    rows = list(csv.DictReader(open(path)))
    assert [r["method"] for r in rows] == ["bp", "drtp", "f3:delayed_error"]
    assert all(float(r["step_memory_mb"]) > 0 for r in rows) and rows[0]["ratio"] == "1.0"
    assert "beyondbp bench memory tiny" in path.with_suffix(".json").read_text()
    old = [{"dataset": "digits", "model": "mlp-1x16", "method": m, "step_memory_mb": ""} for m in ("bp", "drtp")]
    old[1]["step_memory_mb"] = 9.5  # recorded by the run itself: kept
    filled = with_measured_memory(old, path)
    assert float(filled[0]["step_memory_mb"]) == float(rows[0]["step_memory_mb"]) and filled[1]["step_memory_mb"] == 9.5


def test_bench_memory_leaves_empty_the_cells_of_pipeline_stages_which_measure_none(tmp_path, monkeypatch):
    from beyondbp.bench import memory

    measured = {"bp": {"step_memory_mb": 2.0}, "drtp": {}, "f3": {"step_memory_mb": 1.0}}
    monkeypatch.setattr(memory, "run", lambda config, out, progress: measured[config.method.split(":")[0]])
    (tmp_path / "tiny.toml").write_text(TINY)
    rows = memory.measure_suite_memory(load_suite(str(tmp_path / "tiny.toml")), device="cpu")
    assert [(r["step_memory_mb"], r["ratio"]) for r in rows] == [(2.0, 1.0), ("", ""), (1.0, 0.5)]
    assert "| drtp | – | – |" in memory.memory_markdown(rows, {"command": "c", "machine": "m", "finished": "f"})
