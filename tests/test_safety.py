"""The Python API refuses what the command line refuses, and bad input is one line (issue: one source of truth)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from beyondbp import RunConfig, Trainer, make_method, make_objective, run
from beyondbp.cli import main
from beyondbp.errors import BeyondBPError
from beyondbp.lowrank import OIALR
from beyondbp.models import mlp
from beyondbp.train import TrainingWarning

BCE = make_objective("bce", "classification")


def small_model():
    torch.manual_seed(0)
    return mlp(4, 3, hidden=(64, 64), output_activation=torch.nn.Sigmoid())


@pytest.mark.parametrize("call,message", [
    (lambda: make_method("f3", exection="forward"),
     r"method 'f3' takes no option 'exection'; its options: .*, signal, buffer_init"),
    (lambda: make_method("bp", signl="x"), r"method 'bp' takes no option 'signl'; its options: none"),
    (lambda: OIALR(start=0), "OIALR needs start >= 1"),
    (lambda: Trainer(small_model(), make_method("fa"), torch.optim.SGD(small_model().parameters(), 0.1), BCE,
                     lowrank=OIALR()), r"lowrank='oialr' composes with .* layer-wise feedback \(fa\)"),
    (lambda: run(RunConfig(method="fa", lowrank="oialr")), r"lowrank='oialr' composes with"),
    (lambda: run(RunConfig(method="bp", unlocked=True)), "unlocked updates need a direct-feedback method"),
])
def test_the_python_api_refuses_what_the_cli_refuses(call, message):
    with pytest.raises(BeyondBPError, match=message):
        call()


def test_unlocked_outside_a_trainer_is_refused_instead_of_running_the_synchronous_update():
    model = small_model()
    method = make_method("drtp", unlocked=True)
    method.attach(model, num_outputs=3)
    with pytest.raises(BeyondBPError, match=r"needs a step for each segment: train with beyondbp.Trainer"):
        method.step(model, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), None, BCE)


def idx_images(path, count: int, rows: int = 2, announce: int | None = None, compress: bool = False):
    header = bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (announce or count, rows, rows))
    data = header + np.zeros(count * rows * rows, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data)[:-10] if compress else data)


@pytest.mark.parametrize("damage", ["truncated-gz", "short-header"])
def test_damaged_idx_files_are_one_line(tmp_path, damage, capsys):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        if damage == "truncated-gz":
            idx_images(folder / (name + ".gz"), 4, compress=True)
        else:
            idx_images(folder / name, 4, announce=9)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes(4))
    code = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-progress",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("not a complete gzip file" if damage == "truncated-gz" else "header announces") in err


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    assert main(["train", "--epochs", "1", "--no-progress", "--out", str(mine)]) == 2
    assert "is an existing file" in capsys.readouterr().err and mine.read_text() == "mine"


def test_resume_reports_a_missing_or_corrupt_checkpoint(tmp_path, capsys):
    args = ["train", "--epochs", "1", "--hidden", "16", "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*args, "--resume"]) == 0
    assert "no checkpoint in" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main([*args, "--resume"]) == 2
    above, last = capsys.readouterr().err.strip().splitlines()
    assert "is not a readable checkpoint" in last and above == "beyondbp: data digits: bundled with scikit-learn"


def test_a_loss_that_rises_far_above_its_start_warns_naming_the_learning_rate(tmp_path):
    args = ["train", "--epochs", "1", "--hidden", "16", "--lr", "1e6", "--no-progress", "--out", str(tmp_path)]
    with pytest.warns(TrainingWarning, match="the learning rate 1e.06 may be too large"):
        assert main(args) == 0


def test_non_finite_parameters_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    class Poison(torch.optim.SGD):  # an optimizer that breaks the weights in the second epoch
        steps = 0

        def step(self, closure=None):
            super().step(closure)
            Poison.steps += 1
            if Poison.steps == 40:
                with torch.no_grad():
                    self.param_groups[0]["params"][0][0, 0] = float("inf")

    from conftest import blobs

    model = small_model()
    trainer = Trainer(model, make_method("dfa"), Poison(model.parameters(), lr=0.01), BCE, out_dir=tmp_path,
                      progress=False)
    with pytest.raises(BeyondBPError, match=r"parameter 0.1.weight is not.*epoch 2.*last good checkpoint kept"):
        trainer.fit(blobs().train, epochs=3, batch_size=5)
    assert len(torch.load(tmp_path / "checkpoint.pt", weights_only=False)["history"]) == 1


def test_train_ignores_options_its_method_does_not_take_with_a_notice(capsys, tmp_path):
    """One command line serves every method of a comparison: fa runs, and says what it ignored."""
    assert main(["train", "--method", "fa", "--tangents", "4", "--feedback-points", "0", "--dataset", "digits",
                 "--epochs", "1", "--hidden", "16", "--out", str(tmp_path / "fa")]) == 0
    assert ("notice: --feedback-points, --tangents do not apply to method fa and are ignored; its options: "
            "--exact-modules, --feedback-init, --feedback-normalize") in capsys.readouterr().err
    assert (tmp_path / "fa" / "summary.json").is_file()


@pytest.mark.parametrize("settings,message", [
    ({"balance": "speed"}, "unknown balance 'speed'; known: parameters, time"),
    ({"log": "wandb"}, "unknown log 'wandb'; known: tensorboard"),
    ({"execution": "fast"}, "unknown execution 'fast'; known: auto, autograd, forward"),
])
def test_a_setting_with_choices_is_checked_from_python_as_on_the_command_line(settings, message):
    with pytest.raises(BeyondBPError, match=message):
        RunConfig(**settings).validate()
    from beyondbp.autopq.advanced import AdvancedConfig

    with pytest.raises(BeyondBPError, match="unknown sigma_search 'both'; known: nested, joint"):
        AdvancedConfig(dataset="PV", sigma_search="both").validate()
