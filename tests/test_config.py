"""The run configuration: sections owned by their code, composed into one flat RunConfig, and stored
settings upgraded from older schemas in one place."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from beyondbp.config import SCHEMA, SECTIONS, RunConfig, upgrade_settings
from beyondbp.errors import BeyondBPError
from beyondbp.experiment import run
from beyondbp.methods import method_options, method_section
from beyondbp.methods.direct_options import F3Options
from beyondbp.optim import TrainingOptions

DATA = Path(__file__).parent / "data"
#: Written by the code before sections existed (commit 3845870): f3 on digits, 1 of 2 epochs, with these settings.
OLD = dict(method="f3", dataset="digits", hidden=(8,), batch_size=100, seed=3, feedback_exclude=("bias",))


def test_every_section_field_is_one_flat_setting_with_its_default():
    fields = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for section in SECTIONS:
        for f in dataclasses.fields(section):
            assert fields[f.metadata.get("flat") or f.name] == f.default, (section.__name__, f.name)
    assert fields["feedback_normalize"] is False and "normalize" not in fields  # the flat spelling is kept


def test_a_section_reads_the_flat_settings_and_checks_them_once():
    config = RunConfig(method="f3", feedback_normalize=True, signal_decay=0.5, lr=0.1, weight_decay=0.01)
    options = config.method_options()
    assert isinstance(options, F3Options) and options.normalize and options.signal_decay == 0.5
    assert config.training_options() == TrainingOptions(lr=0.1, weight_decay=0.01)
    with pytest.raises(BeyondBPError, match="weight_decay must be at least 0"):
        RunConfig(weight_decay=-1).validate()
    with pytest.raises(BeyondBPError, match="signal_decay must be in"):
        method_section("f3", signal_decay=2.0)
    assert "weight_decay" not in method_options("f3")


def test_weight_decay_reaches_the_optimizer_and_changes_the_step():
    """SGD's coupled decay: p <- p - lr (g + wd p), checked by hand on one step; AdamW's is decoupled."""
    model = torch.nn.Linear(3, 2)
    options = TrainingOptions(optimizer="sgd", momentum=0.0, lr=0.5, weight_decay=0.1)
    optimizer = options.optimizer_for(model)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for p, old in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), old - 0.5 * (1 + 0.1 * old))
    adamw = TrainingOptions(optimizer="adamw", weight_decay=0.1).optimizer_for(model)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.1


def test_stored_settings_of_schema_1_are_upgraded_with_every_later_setting_at_its_default():
    stored = torch.load(DATA / "f3-digits-schema1.pt", weights_only=False)["run_info"]
    assert "schema" not in stored and "signal_decay" not in stored  # schema 1 left it out at its default
    upgraded = upgrade_settings(stored)
    assert upgraded["schema"] == SCHEMA and upgraded["signal_decay"] == 1.0 and upgraded["weight_decay"] == 0.0
    assert upgraded == RunConfig(**OLD).run_info()
    with pytest.raises(BeyondBPError, match="newer beyondbp"):
        upgrade_settings({"schema": SCHEMA + 1})


def test_an_old_checkpoint_resumes_as_if_the_run_had_not_stopped(tmp_path):
    """The checkpoint of schema 1 resumed to epoch 2 equals today's uninterrupted 2-epoch run, and the value
    the old code itself reached when resuming it (0.7224312676 test loss, to float32 precision)."""
    shutil.copy(DATA / "f3-digits-schema1.pt", tmp_path / "checkpoint.pt")
    shutil.copy(DATA / "f3-digits-schema1-metrics.jsonl", tmp_path / "metrics.jsonl")
    resumed = run(RunConfig(**OLD, epochs=2), tmp_path, resume=True, progress=False)
    whole = run(RunConfig(**OLD, epochs=2), tmp_path / "whole", progress=False)
    assert resumed["test_loss"] == whole["test_loss"] and resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["test_loss"] == pytest.approx(0.7224312676323785, rel=1e-5)
    stored = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["run_info"]
    assert stored["schema"] == SCHEMA
    with pytest.raises(BeyondBPError, match="other settings \\(signal_decay\\)"):
        run(RunConfig(**OLD, epochs=3, signal_decay=0.5), tmp_path, resume=True, progress=False)


def test_data_go_onto_a_cuda_device_when_they_fit_a_quarter_of_its_free_memory_or_are_told_to():
    from beyondbp.data import load_dataset
    from beyondbp.execution import ExecutionOptions

    auto, device, host = (ExecutionOptions(data_placement=p) for p in ("auto", "device", "host"))
    assert auto.on_device(250, 1000) and not auto.on_device(251, 1000)
    assert device.on_device(10**12, 0) and not host.on_device(1, 10**12)
    data = load_dataset("digits")
    assert device.place(data, torch.device("cpu")) is data  # nothing to move to on the CPU
    assert "data_placement" not in RunConfig(data_placement="host").run_info()  # the same run either way
