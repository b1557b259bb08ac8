"""Bad input, in one place: a table of commands that must end in one readable line and exit code 2, and a
property-based test that writes random small tables and asserts that each is either trained with a sensible task or
refused in one line; never a traceback, never exit 0 with a nonsensical task."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beyondbp.cli import main
from beyondbp.data.user_files import MISSING

FAST = ["--epochs", "1", "--hidden", "4", "--batch-size", "8", "--no-progress"]


def series_text(bad_row: int | None = None) -> str:
    """Twenty days of an hourly series for AutoPQ; ``bad_row`` holds a word instead of a number."""
    rows = [f"2020-01-{1 + h // 24:02d} {h % 24:02d}:00,{10 + 5 * np.sin(h / 24 * 2 * np.pi):.3f}" for h in range(480)]
    if bad_row is not None:
        rows[bad_row] = rows[bad_row].split(",")[0] + ",abc"
    return "when,load\n" + "\n".join(rows) + "\n"


def files(tmp_path: Path) -> dict[str, Path]:
    """Small bad files, written once per test."""
    written = {
        "ragged.csv": "a,b,y\n1,2,0\n3,4\n",
        "empty.csv": "",
        "text-feature.csv": "a,b,y\n1,x,0\n2,3,1\n",
        "missing-target.csv": "a,y\n1,0\n2,\n3,1\n4,0\n",
        "stray-word.csv": "a,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(10)) + "11,abc\n",
        "one-row.csv": "a,y\n1,0\n",
        "corpus.txt": "a short text",
        "model.py": "def model(shape, n):\n    raise RuntimeError('no model today')\n",
        "wide.py": "import torch\ndef model(shape, n):\n    return torch.nn.Sequential(torch.nn.Flatten(), "
                   "torch.nn.Linear(64, 13))\n",
        "words.csv": "a,b,y\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,dog\n",
        "mine.txt": "a file of the user's",
        "series.csv": series_text(),
        "series-word.csv": series_text(bad_row=100),
    }
    for name, text in written.items():
        (tmp_path / name).write_text(text)
    np.savez(tmp_path / "nan.npz", x=np.array([[0.0], [np.nan], [1.0]]), y=np.array([0, 1, 0]))
    np.savez(tmp_path / "no-y.npz", x=np.zeros((3, 2)))
    np.savez(tmp_path / "short-y.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    return {name: tmp_path / name for name in [*written, "nan.npz", "no-y.npz", "short-y.npz"]}


SERIES = ["--csv", "{series.csv}", "--time", "when", "--target", "load"]  # an AutoPQ series that is fine
CASES = [
    (["train", "--method", "nope"], "known methods: bp"),
    (["train", "--dataset", "nope"], "known datasets:"),
    (["train", "--model", "nope"], "known models:"),
    (["train", "--loss", "nope"], "known losss:|known losses:"),
    (["train", "--optimizer", "nope"], "known optimizers:"),
    (["train", "--epochs", "0"], "must be positive"),
    (["train", "--lr", "-1"], "must be positive"),
    (["train", "--data", "{ragged.csv}", "--target", "y"], "line 3: 2 fields, the header has 3"),
    (["train", "--data", "{empty.csv}", "--target", "y"], "is empty"),
    (["train", "--data", "{text-feature.csv}", "--target", "y"], "line 2, column 'b': 'x' is not a number"),
    (["train", "--data", "{missing-target.csv}", "--target", "y"], "line 3, column 'y': the target is missing"),
    (["train", "--data", "{stray-word.csv}", "--target", "y"], "line 12, column 'y': 'abc' is not a number"),
    (["train", "--data", "{one-row.csv}", "--target", "y"], "at least 2 are needed"),
    (["train", "--data", "{ragged.csv}"], "name the target column"),
    (["train", "--data", "{nan.npz}"], "x holds NaN or infinite values"),
    (["train", "--data", "{no-y.npz}"], "has no array y"),
    (["train", "--data", "{short-y.npz}"], "x has 3 rows but y has 2"),
    (["train", "--data", "{corpus.txt}"], "give --context TOKENS"),
    (["train", "--data", "{corpus.txt}", "--context", "64"], "too short for samples of 64 tokens"),
    (["train", "--model", "{model.py}:model"], "no model today"),
    (["train", "--model", "{model.py}:nothing"], "nothing"),
    (["train", "--data", "{nowhere.csv}", "--target", "y"], "does not exist"),
    (["train", "--label-smoothing", "0.1"], "label smoothing applies to loss ce"),
    (["train", "--train-samples", "1"], "must be at least 2"),
    (["train", "--method", "dfa", "--feedback-points", "nowhere"], "is not a module of the model"),
    (["train", "--method", "f3", "--buffer-rank", "-1"], "buffer_rank must be at least 0"),
    (["train", "--method", "f3", "--signal-decay", "2"], "signal_decay must be in \\(0, 1\\]"),
    (["train", "--stages", "9", "--method", "f3"], "cannot cut"),
    (["tune", "--method", "dfa", "--trials", "0"], "at least one trial|trials must be"),
    (["autopq", "--dataset", "nope"], "unknown AutoPQ data set 'nope'"),
    (["generate", "--run", "{nowhere}"], "no checkpoint at"),
    (["align", "--run", "{nowhere}"], "no checkpoint at"),
    # the model and the data
    (["train", "--model", "{wide.py}:model"], r"outputs of shape \(\d+, 13\) .* the data needs \[batch, 10\]"),
    (["train", "--data", "{words.csv}", "--target", "y", "--task", "regression"],
     "regression needs numeric targets; 4 of the 4 are not numbers, e.g. 'cat'"),
    (["train", "--task", "nope"], "invalid choice: 'nope'"),
    (["train", "--augment", "crop-flip", "--data", "{words.csv}", "--target", "y"], "needs images"),
    (["train", "--model", "hf:BertForSequenceClassification", "--hf-config", "nosuch=1"],
     "BertConfig has no setting 'nosuch'"),
    (["train", "--model", "hf:NoSuchModel"], "transformers has no model class 'NoSuchModel'"),
    (["train", "--hidden", "0"], "hidden widths must be positive"),
    (["train", "--activation", "nope"], "known activations:"),
    (["train", "--recompute-bn", "5"], "has no batch norm"),
    (["train", "--eval-every", "0"], "--eval-every must be at least 1, got 0"),
    (["train", "--data", "{corpus.txt}", "--context", "0"], "must be at least 1"),
    # the recipe
    (["train", "--batch-size", "0"], "batch size and lr must be positive"),
    (["train", "--lr-schedule", "cosine", "--warmup-epochs", "5", "--epochs", "2"],
     r"warm-up \(5 epochs\) is not shorter"),
    (["train", "--precision", "nope"], "invalid choice: 'nope'"),
    (["train", "--weight-decay", "-1"], "weight-decay must be at least 0"),
    (["train", "--clip-grad-norm", "0"], "clip-grad-norm must be positive"),
    (["train", "--optimizer", "sgd", "--momentum", "2"], r"momentum must be in \[0, 1\)"),
    (["train", "--method", "dfa", "--compile"], "dfa cannot run compiled"),
    # methods and executions
    (["train", "--method", "fg:k0"], "at least one tangent"),
    (["train", "--method", "f3:nosignal"], "known signals:"),
    (["train", "--method", "fa", "--exact-modules", "nowhere"], "exact module 'nowhere' is not a module"),
    (["train", "--method", "dfa", "--feedback-points", "0,0"], "given twice"),
    (["train", "--stages", "2", "--method", "bp"], "stages need a signal known before the forward pass"),
    (["train", "--stages", "2", "--nproc", "2", "--method", "f3"], "cannot be combined with data parallelism"),
    (["train", "--nproc", "0"], "nproc must be at least 1"),
    (["train", "--device", "nope"], "unknown device 'nope'"),
    # output folders: nothing of the user's is written over
    (["train", "--out", "{mine.txt}"], "is an existing file, not a folder"),
    (["train", "--out", "{mine.txt}/run"], "its part .*mine.txt. is an existing file"),
    (["tune", "--method", "dfa", "--jobs", "0"], "jobs be at least 1"),
    (["tune", "--method", "dfa", "--lr-bounds", "1e-2,1e-4"], "0 < low < high"),
    (["compare", "--methods", "bp,nope"], "unknown method 'nope'"),
    (["bench", "nope"], "unknown suite 'nope'.*known suites: "),
    (["bench", "loop", "--models", "nope"], "unknown model 'nope'"),
    # AutoPQ
    (["autopq", "--csv", "{nowhere.csv}", "--time", "when", "--target", "load"], "does not exist"),
    (["autopq", "--csv", "{series.csv}", "--time", "when", "--target", "nope"], "has no column 'nope'"),
    (["autopq", "--csv", "{series-word.csv}", "--time", "when", "--target", "load"],
     "line 102, column 'load': 'abc' is not a number"),
    (["autopq", *SERIES, "--forecaster", "nope"], "known forecasters:"),
    (["autopq", *SERIES, "--holidays", "XX"], "unknown holiday region 'XX'"),
    (["autopq-advanced", *SERIES, "--budget-trials", "0"], "budget must be positive"),
    (["autopq-advanced", *SERIES, "--search", "nope"], "unknown forecaster 'nope' in the search space"),
    (["autopq-advanced", *SERIES, "--workers", "0"], "workers must be at least 1"),
    (["autopq-advanced", *SERIES, "--storage", "bad://x"], "cannot open the study storage bad://x"),
    (["autopq-advanced", *SERIES, "--partial", "2"], "partial must lie in"),
]


@pytest.mark.parametrize("arguments, phrase", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, arguments, phrase):
    paths = files(tmp_path)
    arguments = [re.sub(r"\{([^}]+)\}", lambda m: str(paths.get(m.group(1), tmp_path / m.group(1))), a)
                 for a in arguments]
    own_folder = arguments[0] in ("train", "tune", "compare") and "--out" not in arguments
    try:
        code = main([*arguments, *(["--out", str(tmp_path / "run")] if own_folder else [])])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    err = capsys.readouterr().err
    *above, last = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert re.match(r"beyondbp( [\w-]+)?: error: ", last) and re.search(phrase, last), last
    assert all(line.startswith(("beyondbp: data ", "beyondbp: notice: ")) for line in above), err
    assert paths["mine.txt"].read_text() == "a file of the user's"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # a refused run leaves no half-written record


# Random small tables: cells that are numbers, words, missing markers or blank, in columns of one kind or mixed.
NUMBERS = st.one_of(st.integers(-3, 3).map(str), st.floats(-5, 5, allow_nan=False).map(lambda v: f"{v:.3g}"))
CELLS = st.one_of(NUMBERS, st.sampled_from(["", "nan", "NA", "?", "null", "abc", "cat", "dog", " 1 ", "1e3", "inf"]))


@st.composite
def tables(draw) -> tuple[list[str], list[list[str]]]:
    columns = draw(st.integers(1, 3))
    rows = draw(st.integers(1, 14))
    kinds = [draw(st.sampled_from(["numbers", "mixed", "constant"])) for _ in range(columns + 1)]
    body = []
    for _ in range(rows):
        row = []
        for kind in kinds:
            cell = {"numbers": NUMBERS, "mixed": CELLS, "constant": st.just("1")}[kind]
            row.append(draw(cell))
        body.append(row)
    target = draw(st.sampled_from(["numbers", "classes", "words", "mixed"]))
    labels = {"numbers": NUMBERS, "classes": st.sampled_from(["0", "1", "2"]), "words": st.sampled_from(["a", "b"]),
              "mixed": CELLS}[target]
    for row in body:
        row[-1] = draw(labels)
    return [f"f{i}" for i in range(columns)] + ["y"], body


def sensible(summary: dict, body: list[list[str]], classes: int | None) -> bool:
    """A finished run's task fits its targets: classification over the distinct, present values (numbers compared
    as numbers: '0' and '-0' are one class), at least two; regression on numbers only."""
    values = [row[-1].strip() for row in body]
    if any(v.lower() in MISSING for v in values):
        return False
    if summary["task"] == "classification":
        try:
            distinct = {float(v) for v in values}
        except ValueError:
            distinct = set(values)
        return classes == len(distinct) >= 2
    try:
        return all(np.isfinite(float(v)) for v in values)
    except ValueError:
        return False


@settings(max_examples=int(os.environ.get("BEYONDBP_HYPOTHESIS_EXAMPLES", "500")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(table=tables())
def test_a_random_table_is_trained_sensibly_or_refused_in_one_line(tmp_path_factory, table):
    folder = tmp_path_factory.mktemp("table")
    header, body = table
    path = folder / "table.csv"
    path.write_text(",".join(header) + "\n" + "".join(",".join(row) + "\n" for row in body))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--data", str(path), "--target", "y", *FAST, "--out", str(folder / "run")])
    text = err.getvalue()
    assert "Traceback" not in text
    if code == 0:
        summary = json.loads((folder / "run" / "summary.json").read_text())
        classes = output_width(folder / "run") if summary["task"] == "classification" else None
        assert sensible(summary, body, classes), (header, body, summary["task"])
    else:
        assert code == 2, text
        *above, last = text.strip().splitlines()
        assert last.startswith("beyondbp: error: ") and all(line.startswith("beyondbp: ") for line in above), text


def output_width(run: Path) -> int:
    """The number of outputs a finished run trained: its checkpoint's last weight's rows."""
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    return [v for k, v in state["model"].items() if k.endswith("weight")][-1].shape[0]


@pytest.mark.parametrize("arguments, patched, message", [
    (["train", "--epochs", "1"], "beyondbp.cli.train.run",
     "beyondbp: interrupted; run again with --resume to continue"),
    (["tune", "--method", "dfa", "--trials", "1"], "beyondbp.cli.compare.tune",
     "beyondbp: interrupted; the same command continues the search"),
    (["compare", "--methods", "bp"], "beyondbp.cli.compare.compare", "beyondbp: interrupted"),
])
def test_an_interrupted_command_says_how_it_continues(tmp_path, capsys, monkeypatch, arguments, patched, message):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(patched, interrupted)
    assert main([*arguments, "--out", str(tmp_path / "run"), "--no-progress"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
