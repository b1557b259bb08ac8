"""The command line: outputs of train and compare, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings

import pytest
from torch import nn

from beyondbp.cli import main
from beyondbp.errors import UnsupportedModelError
from beyondbp.methods import make_method

FAST = ["--hidden", "32", "--epochs", "2", "--no-progress"]


def test_train_writes_summary_metrics_and_checkpoint(tmp_path, capsys):
    assert main(["train", "--method", "f3", "--signal", "delayed_loss", "--out", str(tmp_path), *FAST]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("method", "dataset", "model", "seed", "epochs", "train_seconds", "test_accuracy",
                "best_test_accuracy"):
        assert key in summary
    assert summary["method"] == "f3:delayed_loss" and summary["epochs"] == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "checkpoint.pt").is_file()
    assert "test_accuracy" in capsys.readouterr().out


def test_a_finished_run_is_not_written_over_and_sgd_direct_feedback_is_warned(tmp_path, capsys):
    """A second ``train`` into a folder that holds a run is refused (exit 2, the run untouched) unless it
    resumes; direct feedback under SGD without --feedback-batch-mean is warned about, with it not."""
    args = ["train", "--method", "dfa", "--optimizer", "sgd", "--out", str(tmp_path), *FAST]
    with pytest.warns(UserWarning, match="a step 50 times the mean loss's gradient"):
        assert main(args) == 0
    capsys.readouterr()
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    assert main(args + ["--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{tmp_path} already holds a run (checkpoint.pt): --resume continues it, another --out "
                        f"starts a new one (or delete the folder)") and "Traceback" not in err
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint
    assert main(args + ["--epochs", "3", "--resume", "--feedback-batch-mean"]) == 2  # another setting: refused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--method", "dfa", "--optimizer", "sgd", "--feedback-batch-mean",
                     "--out", str(tmp_path / "mean"), *FAST]) == 0
        assert main(["train", "--method", "shallow", "--optimizer", "sgd", "--out", str(tmp_path / "shallow"),
                     *FAST]) == 0  # shallow injects no feedback: nothing to warn about
    assert not [w for w in caught if "mean loss's gradient" in str(w.message)]


def test_a_run_without_out_starts_beside_the_earlier_ones_and_resume_continues_the_first(tmp_path, monkeypatch,
                                                                                         capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["train", "--method", "drtp", *FAST]) == 0
    assert "outputs in runs/drtp-digits-seed0-2" in capsys.readouterr().out
    assert (tmp_path / "runs" / "drtp-digits-seed0" / "checkpoint.pt").is_file()
    assert main(["train", "--method", "drtp", *FAST, "--epochs", "3", "--resume"]) == 0
    assert "after 3 epochs" in capsys.readouterr().out
    assert json.loads((tmp_path / "runs" / "drtp-digits-seed0" / "summary.json").read_text())["epochs"] == 3


def test_train_regression_summary(tmp_path):
    assert main(["train", "--dataset", "diabetes", "--method", "drtp", "--out", str(tmp_path), *FAST]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_mae"] > 0 and summary["test_rmse"] > 0 and summary["loss"] == "mse"


def test_compare_writes_table_csv_and_plot(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "bp,dfa,f3:delayed_error", "--seeds", "1,2", "--lr", "1e-2", "--out", str(out),
            *FAST]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("bp", "1"), ("bp", "2"), ("dfa", "1"), ("dfa", "2"), ("f3:delayed_error", "1"), ("f3:delayed_error", "2")]
    assert all(0.5 < float(r["final"]) <= 1 for r in rows)
    table = (out / "results.md").read_text()
    assert "| f3:delayed_error |" in table and "±" in table
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # a second call reuses the finished runs
    mtime = (out / "runs" / "bp-seed1" / "checkpoint.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "runs" / "bp-seed1" / "checkpoint.pt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("args,known", [
    (["train", "--method", "nope"], "known methods: bp, brsf, dfa, drtp, f3, fa, fg, frsf, ldfa, shallow, usf"),
    (["train", "--method", "f3", "--signal", "nope"], "known signals: class_error_softmax, current_error"),
    (["train", "--dataset", "nope"], "known datasets: cifar10"),
    (["train", "--model", "nope"], "known models: cnn, f3vit, gpt, mlp, resnet18, resnet20, resnet32, resnet56, vgg11"),
    (["train", "--activation", "nope"], "known activations: gelu, leaky_relu"),
    (["train", "--method", "fa", "--feedback-init", "nope"], "known feedback inits: binomial"),
        (["compare", "--methods", "bp,nope"], "known methods"),
    (["train", "--method", "dfa", "--signal", "delayed_error"], "applies to f3 only"),
    (["train", "--dataset", "diabetes", "--loss", "bce"], "does not fit a regression"),
    (["train", "--method", "f3:delayed_error_one_hot", "--dataset", "diabetes", *FAST], "needs a classification"),
    (["train", "--epochs", "0"], "must be positive"),
])
def test_bad_input_is_one_line_with_exit_code_2(args, known, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    *above, last = err.strip().splitlines()
    assert known in last and "Traceback" not in err
    assert all(line.startswith("beyondbp: data ") for line in above)  # at most where the data came from


def test_missing_data_names_the_places(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "d" / "mnist") in err and "--download" in err


@pytest.mark.slow
def test_argument_errors_are_one_line():
    result = subprocess.run([sys.executable, "-m", "beyondbp", "train", "--epochs", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid int value" in result.stderr


def test_a_warning_is_one_line_and_shown_once_whatever_its_source_line():
    """The command line's warnings: one line without source, and the same line from another place (a search's
    probe, then its trials) not again; another text still shows."""
    script = ("import warnings\nfrom beyondbp.errors import show_warnings_in_one_line\n"
              "show_warnings_in_one_line()\n"
              "warnings.warn('fa keeps the exact backward of 1 module(s)')\n"
              "warnings.warn('fa keeps the exact backward of 1 module(s)')\n"
              "warnings.warn('epoch 2: training loss grew')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stderr.splitlines() == ["beyondbp: warning: fa keeps the exact backward of 1 module(s)",
                                          "beyondbp: warning: epoch 2: training loss grew"]
    before = warnings.formatwarning
    assert main(["list"]) == 0 and warnings.formatwarning is before  # a caller's format is given back


@pytest.mark.slow
def test_list_names_everything():
    result = subprocess.run([sys.executable, "-m", "beyondbp", "list"], capture_output=True, text=True, check=True)
    for name in ("bp", "shallow", "fa", "dfa", "drtp", "f3", "delayed_error_softmax", "identity_pm",
                 "fashion-mnist", "wine-quality", "mlp"):
        assert f"  {name} " in result.stdout


def test_layerwise_methods_name_a_layer_they_cannot_handle():
    model = nn.Sequential(nn.Linear(3, 4), nn.GRU(4, 2))
    with pytest.raises(UnsupportedModelError, match=r"fa cannot handle layer '1' \(GRU\)"):
        make_method("fa").attach(model, num_outputs=2)
    with pytest.raises(UnsupportedModelError, match=r"usf cannot handle layer '0': padding 'same'"):
        make_method("usf").attach(nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")), num_outputs=2)


def test_divergence_exits_1_with_a_message(tmp_path, capsys):
    # SGD with a huge step on an unbounded regression loss overflows within a few steps
    args = ["train", "--dataset", "diabetes", "--optimizer", "sgd", "--lr", "1e6", "--out", str(tmp_path), *FAST]
    assert main(args) == 1
    err = capsys.readouterr().err
    *above, last = err.strip().splitlines()
    assert "training diverged" in last and "smaller learning rate" in last
    assert above[0] == "beyondbp: data diabetes: bundled with scikit-learn" and "Traceback" not in err


def test_approx_and_optimize_commands(tmp_path, capsys):
    out = tmp_path / "approx"
    args = ["approx", "--dims", "16", "--tangents", "1,4,16", "--aggregations", "mean,projection",
            "--samples", "5", "--out", str(out)]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "approx.csv")))
    assert list(rows[0]) == ["n", "k", "aggregation", "sampler", "cosine_mean", "cosine_std", "norm_ratio_mean",
                             "norm_ratio_std"]
    assert len(rows) == 6 and (out / "approx.png").is_file()
    exact = next(r for r in rows if r["k"] == "16" and r["aggregation"] == "projection")
    assert float(exact["cosine_mean"]) > 0.9999
    assert main(["optimize", "--function", "rosenbrock", "--dim", "4", "--tangents", "4", "--steps", "50",
                 "--lr", "1e-3"]) == 0
    assert "known minimum 0" in capsys.readouterr().out
    assert main(["optimize", "--function", "nope"]) == 2
    assert "known functions: rosenbrock, sphere, styblinski-tang" in capsys.readouterr().err


def test_bench_pipeline_flags_are_checked_before_any_run(capsys):
    assert main(["bench", "pipeline", "--rounds", "0"]) == 2
    assert "needs at least 1 round, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:  # each bench command has its own parser: another's flag is unknown
        main(["bench", "speed", "--rounds", "2"])
    assert exit.value.code == 2
    assert "error: unrecognized arguments: --rounds 2" in capsys.readouterr().err
