"""The training recipe: learning-rate schedules, gradient clipping, augmentation, and their exact resume."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from beyondbp import RunConfig, Trainer, make_method, make_objective, run
from beyondbp.checkpoint import load_checkpoint
from beyondbp.data import Dataset
from beyondbp.data.augment import CropFlip
from beyondbp.errors import BeyondBPError
from beyondbp.lr_schedule import ScheduleOptions
from beyondbp.streams import AUGMENT, epoch_generator


def test_schedule_factors_by_hand():
    cosine = ScheduleOptions(lr_schedule="cosine")
    assert cosine.factor(0, 100, 0) == 1 and cosine.factor(50, 100, 0) == pytest.approx(0.5)
    assert cosine.factor(100, 100, 0) == pytest.approx(0)
    warm = ScheduleOptions(lr_schedule="cosine", warmup_epochs=1)
    assert [warm.factor(n, 110, 10) for n in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert warm.factor(60, 110, 10) == pytest.approx(0.5)  # half way through the 100 steps after warm-up
    step = ScheduleOptions(lr_schedule="step")
    assert [step.factor(n, 100, 0) for n in (49, 50, 74, 75, 99)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])
    cycle = ScheduleOptions(lr_schedule="onecycle")
    assert cycle.factor(0, 100, 0) == pytest.approx(1 / 25) and cycle.factor(30, 100, 0) == pytest.approx(1)
    assert cycle.factor(100, 100, 0) == pytest.approx(1e-4)
    assert ScheduleOptions(warmup_epochs=2).factor(0, 100, 20) == 0.05


@pytest.mark.parametrize("settings,message", [
    ({"lr_schedule": "cosine", "warmup_epochs": 3, "epochs": 3}, "warm-up (3 epochs) is not shorter than training"),
    ({"augment": "crop-flip", "dataset": "diabetes"}, "crop-flip needs images"),
    ({"method": "drtp", "unlocked": True, "clip_grad_norm": 1.0}, "gradient clipping scales the whole step"),
    ({"step_at": (0.8, 0.5)}, "increasing fractions"),
])
def test_recipe_settings_that_cannot_work_are_refused(tmp_path, settings, message):
    with pytest.raises(BeyondBPError, match=re.escape(message)):
        run(RunConfig(**{"dataset": "digits", "hidden": (16,), "epochs": 2, **settings}), tmp_path, progress=False)


def test_crop_flip_gives_a_shifted_and_maybe_mirrored_copy_of_each_image():
    x = torch.arange(5 * 2 * 4 * 5, dtype=torch.float32).view(5, 2, 4, 5)
    out = CropFlip(padding=1)(x, epoch_generator(3, 1, AUGMENT))
    padded = F.pad(x, (1, 1, 1, 1))
    for image, result in zip(padded, out):
        crops = [image[:, dy:dy + 4, dx:dx + 5] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(result, c) or torch.equal(result, c.flip(-1)) for c in crops)
    again = CropFlip(padding=1)(x, epoch_generator(3, 1, AUGMENT))
    assert torch.equal(out, again) and not torch.equal(out, CropFlip(padding=1)(x, epoch_generator(3, 2, AUGMENT)))


def test_gradient_clipping_bounds_the_step():
    """SGD with lr 1 and no momentum moves the parameters by exactly the clipped gradient: norm 0.01."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, make_method("bp"), torch.optim.SGD(model.parameters(), lr=1.0),
                      make_objective("ce", "classification"), progress=False, clip_grad_norm=0.01)
    data = Dataset(torch.randn(10, 4) * 5, F.one_hot(torch.arange(10) % 3, 3).float())
    trainer.fit(data, epochs=1, batch_size=10)
    moved = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(0.01, rel=1e-4)


class Stop(Exception):
    pass


class StopAfterFirstEpoch:
    """A logger that stops the run once epoch 1 is kept (its checkpoint is written before loggers hear of it)."""

    def scalars(self, values, step):
        if any(name.startswith("epoch/") for name in values):
            raise Stop

    def hyperparameters(self, settings, metrics):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("method", ["bp", "f3"])
def test_schedule_augmentation_and_weight_decay_resume_bit_exactly(tmp_path, method):
    """A 3-epoch run stopped after its first epoch and resumed equals the one that never stopped, state for
    state; resuming with another number of epochs would change the schedule and is refused."""
    common = dict(method=method, dataset="digits", model="cnn", channels=(4, 8), loss="ce", optimizer="sgd", lr=0.1,
                  momentum=0.9, weight_decay=5e-4, lr_schedule="cosine", warmup_epochs=0.5,
                  augment="crop-flip", crop_padding=1, clip_grad_norm=5.0, batch_size=64, seed=2, epochs=3)
    with pytest.raises(Stop):
        run(RunConfig(**common), tmp_path / "stopped", progress=False, logger=StopAfterFirstEpoch())
    assert len(load_checkpoint(tmp_path / "stopped" / "checkpoint.pt", "cpu")["history"]) == 1
    with pytest.raises(BeyondBPError, match="schedule was planned for another number of epochs"):
        run(RunConfig(**{**common, "epochs": 4}), tmp_path / "stopped", resume=True, progress=False)
    resumed = run(RunConfig(**common), tmp_path / "stopped", resume=True, progress=False)
    whole = run(RunConfig(**common), tmp_path / "whole", progress=False)
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt", "cpu") for name in ("stopped", "whole"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert a["lr_schedule"]["last_epoch"] == b["lr_schedule"]["last_epoch"] == 3 * math.ceil(1437 / 64)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert method != "bp" or whole["test_accuracy"] > 0.6  # and the recipe trains: bp reaches 0.71
    assert [r["lr"] for r in a["history"]] == [r["lr"] for r in b["history"]]


@pytest.mark.parametrize("method", ["bp", "dfa", "f3", "usf"])
def test_bf16_trains_close_to_fp32(tmp_path, method):
    """Under bfloat16 autocast (8 bits of mantissa in the products) the same run ends within a few points of
    float32's, and its parameters stay float32."""
    common = dict(method=method, dataset="digits", hidden=(64,), loss="ce", epochs=3, seed=1)
    full = run(RunConfig(**common), tmp_path / "fp32", progress=False)
    half = run(RunConfig(**common, precision="bf16"), tmp_path / "bf16", progress=False)
    assert abs(half["test_accuracy"] - full["test_accuracy"]) < 0.06 and half["test_accuracy"] > 0.7
    state = load_checkpoint(tmp_path / "bf16" / "checkpoint.pt", "cpu")["model"]
    assert all(v.dtype == torch.float32 for v in state.values())


def test_bf16_is_refused_by_methods_that_cannot_run_under_autocast(tmp_path):
    with pytest.raises(BeyondBPError, match="fg:k1-mean-weights does not run under bf16 autocast"):
        run(RunConfig(method="fg", dataset="digits", epochs=1, precision="bf16"), tmp_path, progress=False)


def test_fp16_with_loss_scaling_trains_close_to_fp32_and_resumes_exactly(tmp_path):
    """float16 autocast with dynamic loss scaling: the run ends within a few points of float32's, the scale
    (2^16 at the start, doubled after 2000 clean steps) is kept in the checkpoint, and a run stopped after its
    first epoch and resumed equals the one that never stopped."""
    common = dict(method="bp", dataset="digits", hidden=(64,), loss="ce", epochs=3, seed=1)
    full = run(RunConfig(**common), tmp_path / "fp32", progress=False)
    half = run(RunConfig(**common, precision="fp16"), tmp_path / "fp16", progress=False)
    assert abs(half["test_accuracy"] - full["test_accuracy"]) < 0.06 and half["test_accuracy"] > 0.7
    state = load_checkpoint(tmp_path / "fp16" / "checkpoint.pt", "cpu")
    assert state["loss_scaler"]["scale"] == 2.0 ** 16 and all(v.dtype == torch.float32
                                                               for v in state["model"].values())
    with pytest.raises(Stop):
        run(RunConfig(**common, precision="fp16"), tmp_path / "stopped", progress=False,
            logger=StopAfterFirstEpoch())
    resumed = run(RunConfig(**common, precision="fp16"), tmp_path / "stopped", resume=True, progress=False)
    assert resumed["test_accuracy"] == half["test_accuracy"]


def test_fp16_divides_the_scale_out_and_skips_a_step_whose_gradients_overflow():
    """The step's gradient equals float32's (the scale is divided out); a scale so large that the scaled
    gradient overflows float16 (the layer's backward runs in float16; its largest number is 65504) leaves
    the parameters as they were and halves the scale at every such step."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, t = torch.randn(8, 3), torch.randint(0, 2, (8,))
    reference = nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    F.cross_entropy(reference(x), t).backward()
    trainer = Trainer(model, make_method("bp"), torch.optim.SGD(model.parameters(), lr=0.1),
                      make_objective("ce", "classification"), precision="fp16", progress=False)
    data = Dataset(x, F.one_hot(t, 2).float())
    trainer.fit(data, epochs=1, batch_size=8)
    assert torch.allclose(model.weight, reference.weight.detach() - 0.1 * reference.weight.grad, atol=1e-3)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    before = model.weight.detach().clone()
    trainer.fit(data, epochs=2, batch_size=8)
    assert torch.equal(model.weight, before) and trainer.scaler.get_scale() in (2.0 ** 22, 2.0 ** 23)


def test_fp16_is_refused_by_methods_whose_gradients_do_not_come_from_the_loss(tmp_path):
    with pytest.raises(BeyondBPError, match="dfa fills gradients that do not all come from backpropagating"):
        run(RunConfig(method="dfa", dataset="digits", epochs=1, precision="fp16"), tmp_path, progress=False)


def test_compiled_steps_train_as_the_model_itself_does(tmp_path):
    """torch.compile changes the kernels, not the arithmetic: one epoch of bp ends with the same parameters
    (to float32 rounding) and writes a checkpoint of the model's own keys; dfa's hooks refuse it by name."""
    common = dict(method="bp", dataset="digits", hidden=(32,), loss="ce", epochs=1, seed=1)
    plain = run(RunConfig(**common), tmp_path / "plain", progress=False)
    compiled = run(RunConfig(**common, compile=True), tmp_path / "compiled", progress=False)
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt", "cpu")["model"] for name in ("plain", "compiled"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert compiled["test_accuracy"] == pytest.approx(plain["test_accuracy"], abs=0.01)
    with pytest.raises(BeyondBPError, match="dfa cannot run compiled"):
        run(RunConfig(**{**common, "method": "dfa"}, compile=True), tmp_path / "dfa", progress=False)


def test_label_smoothing_is_pytorchs_for_samples_and_tokens_and_keeps_the_targets():
    ce = make_objective("ce", "classification", label_smoothing=0.1)
    y, t = torch.randn(4, 5), torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(ce.per_sample(y, ce.targets(t, 5)),
                               F.cross_entropy(y, t, label_smoothing=0.1, reduction="none"))
    assert torch.equal(ce.targets(t, 5), F.one_hot(t, 5).float())  # what direct feedback's signals read
    lm = make_objective("ce", "lm", label_smoothing=0.1)
    y, t = torch.randn(2, 3, 5), torch.tensor([[1, 2, -100], [0, 4, 3]])
    reference = F.cross_entropy(y.transpose(1, 2), t, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(lm.per_sample(y, lm.targets(t, 5)),
                               torch.stack([reference[0, :2].mean(), reference[1].mean()]))
    with pytest.raises(BeyondBPError, match="label smoothing applies to loss ce, not bce"):
        make_objective("bce", "classification", label_smoothing=0.1)


def test_evaluating_every_few_epochs_trains_the_same_and_reports_the_evaluated_epochs(tmp_path):
    """``eval_every=2`` over 3 epochs evaluates after epochs 2 and 3 only; the weights end equal to those of a
    run evaluated after every epoch, the summary's best is taken over the evaluated epochs, and a run may be
    resumed with another ``eval_every``."""
    common = dict(method="dfa", dataset="digits", hidden=(32,), loss="ce", batch_size=64, seed=3, epochs=3)
    every = run(RunConfig(**common), tmp_path / "every", progress=False)
    with pytest.raises(Stop):
        run(RunConfig(**common, eval_every=2), tmp_path / "sparse", progress=False, logger=StopAfterFirstEpoch())
    sparse = run(RunConfig(**common, eval_every=3), tmp_path / "sparse", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt", "cpu") for name in ("every", "sparse"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [("test_accuracy" in r) for r in b["history"]] == [False, False, True]
    assert sparse["test_accuracy"] == every["test_accuracy"]
    assert sparse["best_test_accuracy"] == sparse["test_accuracy"] <= every["best_test_accuracy"]
    with pytest.raises(BeyondBPError, match="eval.every must be at least 1, got 0"):
        run(RunConfig(**common, eval_every=0), tmp_path / "never", progress=False)
