"""Options of direct feedback that are not in the papers (issue: F³ where it fails): each against what it must
compute by hand, on the fixture ``tiny`` of ``test_methods_hand`` (2 -> 3 tanh -> 2 sigmoid, BCE)."""

from __future__ import annotations

import pytest
import torch

from beyondbp.build import build_run
from beyondbp.errors import BeyondBPError
from beyondbp.experiment import RunConfig, run
from beyondbp.methods import make_method
from beyondbp.methods.signals import DelayedBuffer
from test_methods_hand import BCE, assert_grads, forward_by_hand, grads_by_hand

B1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4]])


def step_with(model, x, t, index, spec: str, **options):
    method = make_method(spec, **options)
    method.attach(model, num_outputs=2, num_samples=4)
    method.feedback = [B1]
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    return method


def test_unvisited_rows_read_their_init():
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    index = torch.tensor([0, 1])
    expected = {"target": t, "zeros": torch.zeros_like(t), "centered_target": t - 1 / 3, "class_mean": t}
    for init, value in expected.items():  # class_mean: the target while no row of the class is written
        buffer = DelayedBuffer(2, 3, torch.device("cpu"), init)
        torch.testing.assert_close(buffer.read(index, t), value)
        buffer.write(index[:1], torch.tensor([[0.5, 0.25, 0.25]]), t[:1])
        torch.testing.assert_close(buffer.read(index, t)[0], torch.tensor([0.5, 0.25, 0.25]))  # written: stored
    with pytest.raises(BeyondBPError, match="known: target, zeros, centered_target, class_mean"):
        DelayedBuffer(2, 3, torch.device("cpu"), "ones")


def test_class_mean_reads_the_mean_written_row_of_the_class():
    """4 samples of classes 0, 1, 0, 0 (C = 2); a rewritten row replaces its old value in the class's mean."""
    buffer = DelayedBuffer(4, 2, torch.device("cpu"), "class_mean")
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    buffer.write(torch.tensor([0, 1]), torch.tensor([[0.5, -0.5], [-0.2, 0.2]]), t[:2])
    torch.testing.assert_close(buffer.read(torch.tensor([2, 3]), t[2:]), torch.tensor([[0.5, -0.5], [0.5, -0.5]]))
    buffer.write(torch.tensor([2]), torch.tensor([[0.1, -0.1]]), t[2:3])
    torch.testing.assert_close(buffer.read(torch.tensor([3]), t[3:]), torch.tensor([[0.3, -0.3]]))
    buffer.write(torch.tensor([0]), torch.tensor([[0.3, -0.3]]), t[:1])  # second visit: (0.3 + 0.1) / 2
    torch.testing.assert_close(buffer.read(torch.tensor([3, 1]), t[[3, 1]]), torch.tensor([[0.2, -0.2],
                                                                                            [-0.2, 0.2]]))
    restored = DelayedBuffer(4, 2, torch.device("cpu"), "class_mean")
    restored.load_state_dict(buffer.state_dict())
    torch.testing.assert_close(restored.read(torch.tensor([3]), t[3:]), torch.tensor([[0.2, -0.2]]))
    with pytest.raises(ValueError, match="disagree on counting classes"):
        DelayedBuffer(4, 2, torch.device("cpu")).load_state_dict(buffer.state_dict())


def test_decayed_class_means_weigh_each_row_by_its_age():
    """4 samples, decay 0.25: after two writes of 2 rows the first two are half an epoch old (weight 0.5)."""
    buffer = DelayedBuffer(4, 2, torch.device("cpu"), "class_mean", decay=0.25)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    buffer.write(torch.tensor([0, 1]), torch.tensor([[0.4, -0.4], [0.2, -0.2]]), t[:2])
    buffer.write(torch.tensor([2, 3]), torch.tensor([[0.1, -0.1], [-0.6, 0.6]]), t[2:])
    mean = (0.5 * 0.4 + 0.5 * 0.2 + 0.1) / (0.5 + 0.5 + 1)
    torch.testing.assert_close(buffer.class_means(), torch.tensor([[mean, -mean], [-0.6, 0.6]]))
    buffer.write(torch.tensor([0]), torch.zeros(1, 2), t[:1])  # row 0 again: ages 0, 3/4, 1/4, 1/4 (clock 5)
    w1, w2 = 0.25 ** 0.75, 0.25 ** 0.25
    mean = (w1 * 0.2 + w2 * 0.1) / (1 + w1 + w2)
    torch.testing.assert_close(buffer.class_means(), torch.tensor([[mean, -mean], [-0.6, 0.6]]))


def test_a_decayed_row_weighs_by_its_age_in_epochs():
    """4 samples: rows 0, 1 written at clock 2; after rows 2, 3 (clock 4) they are half an epoch old."""
    buffer = DelayedBuffer(4, 2, torch.device("cpu"), "target", decay=0.25)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    buffer.write(torch.tensor([0, 1]), torch.tensor([[0.4, -0.4], [-0.2, 0.6]]), t)
    torch.testing.assert_close(buffer.read(torch.tensor([0, 1]), t), torch.tensor([[0.4, -0.4], [-0.2, 0.6]]))
    buffer.write(torch.tensor([2, 3]), torch.ones(2, 2), t)
    read = buffer.read(torch.tensor([1, 3]), t)
    torch.testing.assert_close(read, torch.tensor([[-0.1, 0.3], [1.0, 1.0]]))  # 0.25 ** (2 / 4) = 0.5
    torch.testing.assert_close(buffer.read(torch.tensor([0]), t * 0 + 7)[0], torch.tensor([0.2, -0.2]))
    restored = DelayedBuffer(4, 2, torch.device("cpu"), "target", decay=0.25)
    restored.load_state_dict(buffer.state_dict())
    torch.testing.assert_close(restored.read(torch.tensor([1, 3]), t), read)
    with pytest.raises(ValueError, match="disagree on signal_decay"):
        DelayedBuffer(4, 2, torch.device("cpu")).load_state_dict(buffer.state_dict())


def test_signal_decay_needs_a_delayed_signal_and_a_factor_in_range():
    assert make_method("f3", signal_decay=0.5).options.signal_decay == 0.5
    with pytest.raises(BeyondBPError, match="signal_decay needs a delayed signal"):
        make_method("f3:one_hot_target", signal_decay=0.5)
    for bad in (0.0, 1.5):
        with pytest.raises(BeyondBPError, match=r"signal_decay must be in \(0, 1\]"):
            RunConfig(method="f3", signal_decay=bad).validate()


def test_f3_second_visit_reads_the_decayed_error(tiny):
    """Two steps on the same 2 of 4 samples: the second reads ``t - y_prev`` times 0.5 ** (2 / 4)."""
    model, x, t, index = tiny
    method = step_with(model, x, t, index, "f3:delayed_error", signal_decay=0.5)
    _, y, _ = forward_by_hand(model, x)
    method.buffer.write(torch.tensor([2, 3]), torch.zeros(2, 2), t)  # the other half of the epoch
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    assert_grads(model, grads_by_hand(model, x, t, 0.5 ** 0.5 * (t - y) @ B1))


def test_class_error_softmax_reads_the_mean_stored_error_of_the_class(tiny):
    """First step: no row stored, so ``t @ I = t`` (DRTP); second: each sample's class's mean stored row."""
    model, x, t, index = tiny
    method = step_with(model, x, t, index, "f3:class_error_softmax")
    assert_grads(model, grads_by_hand(model, x, t, t @ B1))
    t4 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # samples 0, 1 as in ``tiny``
    method.buffer.write(torch.arange(4), torch.tensor([[0.2, -0.2], [-0.1, 0.1], [0.4, -0.4], [-0.3, 0.3]]), t4)
    means = torch.tensor([[0.3, -0.3], [-0.2, 0.2]])
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    assert_grads(model, grads_by_hand(model, x, t, t @ means @ B1))


@pytest.mark.parametrize("execution", ["forward", "autograd"])
def test_a_centred_signal_loses_its_mean_over_classes(tiny, execution):
    model, x, t, index = tiny
    step_with(model, x, t, index, "drtp", center_signal=True, execution=execution)
    assert_grads(model, grads_by_hand(model, x, t, (t - t.mean(1, keepdim=True)) @ B1))


def test_centred_dfa_centres_the_current_error(tiny):
    model, x, t, index = tiny
    _, y, _ = forward_by_hand(model, x)
    step_with(model, x, t, index, "dfa", center_signal=True)
    error = t - y
    assert_grads(model, grads_by_hand(model, x, t, (error - error.mean(1, keepdim=True)) @ B1))


def test_f3_first_visit_reads_the_buffer_init(tiny):
    """Epoch 1 of f3:delayed_error is DRTP with the unvisited rows' value: ``t - 1/C`` for centered_target."""
    model, x, t, index = tiny
    step_with(model, x, t, index, "f3:delayed_error", buffer_init="centered_target")
    assert_grads(model, grads_by_hand(model, x, t, (t - 0.5) @ B1))


def test_excluded_kinds_get_no_gradient_in_hidden_blocks_only(tiny):
    model, x, t, index = tiny
    step_with(model, x, t, index, "drtp", feedback_exclude=("bias",))
    expected = grads_by_hand(model, x, t, t @ B1)
    assert model[0][0].bias.grad is None  # hidden: excluded
    torch.testing.assert_close(model[0][0].weight.grad, expected["0.0.weight"])
    torch.testing.assert_close(model[1][0].bias.grad, expected["1.0.bias"])  # the output block keeps its gradient


def test_excluded_norms_stay_at_their_initialisation(tmp_path):
    config = RunConfig(method="f3", model="vit", depth=2, width=16, mlp=16, heads=2, epochs=1, batch_size=100,
                       feedback_exclude=("norm",))
    summary = run(config, tmp_path, progress=False)
    assert summary["epochs"] == 1
    initial, _, _, _ = build_run(config, config.load_data(), torch.device("cpu"))
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    hidden_norms = [k for k in trained if ".norm" in k and not k.startswith(f"{len(initial) - 1}.")]
    assert hidden_norms, "the ViT's hidden blocks have LayerNorms"
    reference = initial.state_dict()
    assert all(torch.equal(trained[k], reference[k]) for k in hidden_norms)
    moved = [k for k in trained if k.endswith("weight") and ".norm" not in k and not torch.equal(trained[k],
                                                                                                  reference[k])]
    assert moved, "everything else trains"


def test_hidden_blocks_step_at_a_scaled_learning_rate(tiny):
    """SGD without momentum: each parameter moves by its group's lr times its gradient."""
    model, x, t, index = tiny
    config = RunConfig(optimizer="sgd", momentum=0.0, lr=0.5, hidden_lr_scale=0.1)
    optimizer = config.training_options().optimizer_for(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step_with(model, x, t, index, "drtp")
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    optimizer.step()
    for name, p in model.named_parameters():
        lr = 0.5 if name.startswith("1.") else 0.05
        torch.testing.assert_close(p.detach(), before[name] - lr * grads[name], msg=name)
    with pytest.raises(BeyondBPError, match="must be positive"):
        RunConfig(hidden_lr_scale=0).validate()
