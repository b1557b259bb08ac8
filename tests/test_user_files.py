"""The command line on a user's own files: --data FILE.npz/.csv and --model FILE.py:FUNCTION."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from beyondbp.cli import main
from beyondbp.data.user_files import load_user_file

FACTORY = '''
import math
from torch import nn


class Net(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_in, 32), nn.Tanh())
        self.out = nn.Linear(32, n_out)

    def forward(self, x):
        return self.out(self.hidden(x.flatten(1)))


def build(input_shape, num_outputs):
    return Net(math.prod(input_shape), num_outputs)


not_a_function = 3
built = Net(4, 2)


def returns_a_number(input_shape, num_outputs):
    return 3
'''


def blobs(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = np.eye(3, 4)[labels] * 3 + rng.normal(size=(n, 4))
    return x, labels


@pytest.fixture
def files(tmp_path):
    (tmp_path / "net.py").write_text(FACTORY)
    x, y = blobs()
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    names = np.array(["red", "green", "blue"])
    with open(tmp_path / "blobs.csv", "w") as f:
        f.write("a,b,colour,c,d\n")
        for row, label in zip(x, y):
            f.write(f"{row[0]},{row[1]},{names[label]},{row[2]},{row[3]}\n")
    return tmp_path


@pytest.mark.parametrize("method", ["f3", "dfa"])
@pytest.mark.parametrize("data", [["blobs.npz"], ["blobs.csv", "--target", "colour"]])
def test_cli_trains_a_model_from_a_python_file_on_a_users_file(files, method, data, capsys):
    out = files / "run"
    args = ["train", "--method", method, "--model", f"{files / 'net.py'}:build", "--data", str(files / data[0]),
            *data[1:], "--epochs", "15", "--lr", "1e-2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "blobs" and summary["feedback_points"] == ["hidden"]
    assert summary["test_accuracy"] > 0.9
    assert main([*args[:-2], "--epochs", "16", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 16


def test_csv_targets_decide_the_task_and_are_standardised_on_the_training_part(files):
    data = load_user_file(files / "blobs.csv", target="colour")
    assert data.task == "classification" and data.train.num_outputs == 3 and len(data.train) == 240
    assert abs(data.train.x.mean().item()) < 1e-5
    (files / "numbers.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(20)))
    regression = load_user_file(files / "numbers.csv", target="y")
    assert regression.task == "regression" and regression.train.input_shape == (2,)
    assert load_user_file(files / "numbers.csv", target="b").task == "classification"
    assert load_user_file(files / "numbers.csv", target="b", task="regression").task == "regression"


def test_npz_with_its_own_test_part_and_images(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.normal(size=(20, 6, 6)), y=np.arange(20) % 2,
             x_test=rng.normal(size=(4, 6, 6)), y_test=np.array([0, 1, 1, 0]))
    data = load_user_file(tmp_path / "img.npz")
    assert data.train.input_shape == (1, 6, 6) and len(data.test) == 4 and data.train.num_outputs == 2


@pytest.mark.parametrize("write,args,message", [
    (None, ["--data", "{d}/blobs.csv"], "name the target column"),
    (None, ["--data", "{d}/blobs.csv", "--target", "nope"], "has no column 'nope'; its columns: a, b, colour"),
    ("a,b,y\n1,2,0\n3,,1\n", ["--data", "{d}/f.csv", "--target", "y"], r"line 3, column 'b': '' is not a number"),
    ("a,b,y\n1,x,0\n3,4,1\n", ["--data", "{d}/f.csv", "--target", "y"], "'x' is not a number"),
    ("a,b,y\n1,nan,0\n3,4,1\n", ["--data", "{d}/f.csv", "--target", "y"], "holds NaN or infinite values"),
    ("npz-lengths", ["--data", "{d}/f.npz"], "x has 5 rows but y has 4"),
    ("npz-no-y", ["--data", "{d}/f.npz"], "has no array y"),
    (None, ["--data", "{d}/missing.npz"], "does not exist"),
    (None, ["--model", "{d}/missing.py:build"], r"file .*missing.py does not exist"),
    (None, ["--model", "{d}/net.py:nothing"], "has no 'nothing'; callables there: Net, build"),
    (None, ["--model", "{d}/net.py:not_a_function"], "'not_a_function' is a int, not callable"),
    (None, ["--model", "{d}/net.py:built"], r"'built' is a built Net; give a function that builds a fresh one"),
    (None, ["--model", "{d}/net.py:returns_a_number"], "returned a int, not a torch.nn.Module"),
    (None, ["--method", "dfa", "--model", "{d}/net.py:build", "--feedback-points", "hidden,nope"],
     "feedback point 'nope' is not a module of the model; its modules are: hidden, hidden.0"),
    (None, ["--method", "dfa", "--model", "{d}/net.py:build", "--feedback-points", "hidden,hidden"],
     "'hidden' is given twice"),
])
def test_bad_user_input_is_one_line_with_exit_code_2(files, write, args, message, capsys):
    if write == "npz-lengths":
        np.savez(files / "f.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    elif write == "npz-no-y":
        np.savez(files / "f.npz", x=np.zeros((5, 2)))
    elif write:
        (files / "f.csv").write_text(write)
    args = [a.format(d=files) for a in args]
    if "--data" not in args:
        args += ["--data", str(files / "blobs.npz")]
    code = main(["train", *args, "--epochs", "1", "--no-progress", "--out", str(files / "out")])
    err = capsys.readouterr().err
    assert code == 2
    *above, last = err.strip().splitlines()
    assert all(line.startswith("beyondbp: data ") for line in above) and "Traceback" not in err
    assert re.search(message, last), err


@pytest.mark.parametrize("rows,message", [
    ("1,2,x\n3,4,y\n5,6,\n7,8,x\n", "line 4, column 'label': the target is missing ('')"),
    ("1,2,0\n3,4,nan\n5,6,1\n7,8,1\n", "line 3, column 'label': the target is missing ('nan')"),
    ("1,2,2.5\n3,4,abc\n5,6,6.1\n7,8,8\n", "line 3, column 'label': 'abc' is not a number, while 3 of the 4"),
    ("1,2,2.5\n3,4,inf\n5,6,6.1\n7,8,8\n", "line 3, column 'label': the target 'inf' is not finite"),
])
def test_a_table_with_a_missing_or_stray_target_is_refused_not_guessed(tmp_path, capsys, rows, message):
    """Never a class of its own for an empty cell, never strings from one stray word in a numeric column."""
    path = tmp_path / "table.csv"
    path.write_text("a,b,label\n" + rows)
    assert main(["train", "--data", str(path), "--target", "label", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_npz_with_nan_targets_is_refused(tmp_path, capsys):
    path = tmp_path / "data.npz"
    y = np.arange(10, dtype=np.float64)
    y[3] = np.nan
    np.savez(path, x=np.random.default_rng(0).normal(size=(10, 3)), y=y)
    assert main(["train", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert "y holds NaN or infinite values" in capsys.readouterr().err


def test_a_dataset_takes_float64_inputs_and_names_the_form_of_its_targets():
    import torch

    from beyondbp.data import Dataset
    from beyondbp.errors import BeyondBPError

    data = Dataset(torch.zeros(4, 3, dtype=torch.float64), torch.eye(4, 2, dtype=torch.float64))
    assert data.x.dtype == data.t.dtype == torch.float32
    with pytest.raises(BeyondBPError, match="targets must be float \\[N, C\\].*one_hot"):
        Dataset(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))


def test_drop_missing_drops_the_rows_with_a_missing_cell_and_says_how_many(tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    path.write_text("a,b,label\n1,2,x\n3,,y\n5,6,\n7,8,x\n9,1,y\n2,2,x\n3,3,y\n4,4,x\n")
    assert main(["train", "--data", str(path), "--target", "label", "--epochs", "1", "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 2
    assert "line 3, column 'b': '' is not a number" in capsys.readouterr().err  # the first gap, by line
    assert main(["train", "--data", str(path), "--target", "label", "--drop-missing", "--epochs", "1",
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert f"data gaps: {path} (2 rows with a missing cell dropped)" in capsys.readouterr().err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["data_source"].endswith("(2 rows with a missing cell dropped)")
