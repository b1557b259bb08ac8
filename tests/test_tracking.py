"""Experiment tracking: TensorBoard event files read back with TensorBoard's own reader, the logger
interface, and an unwritable log folder."""

from __future__ import annotations

import pytest
import torch

import beyondbp as bb
from beyondbp.data import load_dataset
from beyondbp.tracking import LOG_FOLDER


def test_a_run_logged_to_tensorboard_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = bb.RunConfig(method="dfa", dataset="digits", epochs=2, hidden=(32,), batch_size=100, lr=2e-3,
                          log="tensorboard")
    summary = bb.run(config, out_dir=tmp_path, progress=False)
    events = EventAccumulator(str(tmp_path / LOG_FOLDER))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/train_loss", "epoch/test_accuracy", "epoch/lr", "epoch/seconds", "epoch/joules"} <= tags
    steps = len(load_dataset("digits").train) // 100 + 1  # the last batch is smaller
    assert [e.step for e in events.Scalars("step/train_loss")] == list(range(1, 2 * steps + 1))
    accuracy = events.Scalars("epoch/test_accuracy")
    assert [e.step for e in accuracy] == [1, 2]
    assert accuracy[-1].value == pytest.approx(summary["test_accuracy"])
    assert events.Scalars("epoch/lr")[0].value == pytest.approx(2e-3)
    hparams = [t for t in tags if t.startswith("final/")]
    assert "final/test_accuracy" in hparams


class Recorder:
    """A user's tracker: anything with scalars, hyperparameters and close."""

    def __init__(self):
        self.steps, self.epochs, self.settings, self.closed = [], [], None, False

    def scalars(self, values, step):
        (self.steps if "step/train_loss" in values else self.epochs).append((step, values))

    def hyperparameters(self, settings, metrics):
        self.settings = (settings, metrics)

    def close(self):
        self.closed = True


def test_the_trainer_reports_every_step_and_epoch_to_any_logger():
    data = load_dataset("digits")
    objective = bb.make_objective("ce", data.task)
    model = bb.models.mlp(data.train.input_shape, 10, hidden=[16], activation="tanh",
                          output_activation=objective.output_activation())
    recorder = Recorder()
    trainer = bb.Trainer(model, bb.make_method("drtp"), torch.optim.Adam(model.parameters(), 1e-3), objective,
                         progress=False, run_info={"method": "drtp"}, logger=recorder)
    trainer.fit(data.train, epochs=2, eval_set=data.test, batch_size=500)
    assert [s for s, _ in recorder.steps] == list(range(1, 7))  # 1437 samples: 3 batches an epoch
    assert [s for s, _ in recorder.epochs] == [1, 2]
    assert recorder.epochs[1][1]["epoch/test_accuracy"] == trainer.history[-1]["test_accuracy"]
    assert recorder.settings[0] == {"method": "drtp"} and recorder.closed


def test_an_unwritable_log_folder_is_refused(tmp_path):
    (tmp_path / LOG_FOLDER).write_text("a file where the folder would go")
    with pytest.raises(bb.BeyondBPError, match="cannot write the log directory"):
        bb.run(bb.RunConfig(method="dfa", dataset="digits", epochs=1, hidden=(8,), log="tensorboard"),
               out_dir=tmp_path, progress=False)
    with pytest.raises(bb.BeyondBPError, match="needs an output folder"):
        bb.run(bb.RunConfig(method="dfa", dataset="digits", epochs=1, hidden=(8,), log="tensorboard"),
               progress=False)
