"""Each method's .grad against the update written out by hand from its formula.

Network (fixture ``tiny``): a1 = x W1ᵀ + b1, h1 = tanh(a1), a2 = h1 W2ᵀ + b2, y = σ(a2),
loss L = mean over batch and outputs of the binary cross-entropy, so
∂L/∂a2 = (y - t) / (B·C).
"""

from __future__ import annotations

import pytest
import torch

from beyondbp.errors import BeyondBPError, UnsupportedModelError
from beyondbp.methods import Backprop, DirectFeedback, FeedbackAlignment, make_method
from beyondbp.objectives import make_objective

BCE = make_objective("bce", "classification")


def forward_by_hand(model, x):
    w1, b1 = model[0][0].weight.detach(), model[0][0].bias.detach()
    w2, b2 = model[1][0].weight.detach(), model[1][0].bias.detach()
    h1 = torch.tanh(x @ w1.T + b1)
    y = torch.sigmoid(h1 @ w2.T + b2)
    return h1, y, w2


def grads_by_hand(model, x, t, delta_h1):
    """Weight gradients for a given ∂L/∂h1 (hidden block) and the true output-block gradient."""
    h1, y, _ = forward_by_hand(model, x)
    delta_a2 = (y - t) / t.numel()
    delta_a1 = delta_h1 * (1 - h1 ** 2)
    return {
        "0.0.weight": delta_a1.T @ x, "0.0.bias": delta_a1.sum(0),
        "1.0.weight": delta_a2.T @ h1, "1.0.bias": delta_a2.sum(0),
    }


def assert_grads(model, expected):
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)


def run_step(method, model, x, t, index):
    method.attach(model, num_outputs=2, num_samples=4)
    model.zero_grad()
    return method.step(model, x, t, index, BCE)


def test_bp_is_the_chain_rule(tiny):
    model, x, t, index = tiny
    h1, y, w2 = forward_by_hand(model, x)
    run_step(Backprop(), model, x, t, index)
    assert_grads(model, grads_by_hand(model, x, t, ((y - t) / t.numel()) @ w2))


def test_bp_matches_autograd(tiny):
    model, x, t, index = tiny
    run_step(Backprop(), model, x, t, index)
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    BCE(model(x), t).backward()
    for a, b in zip(ours, model.parameters()):
        torch.testing.assert_close(a, b.grad)


@pytest.mark.parametrize("name,signal", [("dfa", lambda y, t: t - y), ("drtp", lambda y, t: t)])
def test_direct_feedback_projects_the_signal(tiny, name, signal):
    model, x, t, index = tiny
    method = make_method(name)
    method.attach(model, num_outputs=2, num_samples=4)
    b1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4]])
    method.feedback = [b1]
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    _, y, _ = forward_by_hand(model, x)
    # ∂L/∂h1 := s B1, not divided by the batch size
    assert_grads(model, grads_by_hand(model, x, t, signal(y, t) @ b1))


def test_batch_mean_divides_the_injected_signal(tiny):
    model, x, t, index = tiny
    method = DirectFeedback("one_hot_target", batch_mean=True)
    method.attach(model, num_outputs=2, num_samples=4)
    b1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4]])
    method.feedback = [b1]
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    assert_grads(model, grads_by_hand(model, x, t, (t @ b1) / len(x)))


def test_fa_replaces_the_transposed_weight(tiny):
    model, x, t, index = tiny
    method = FeedbackAlignment()
    method.attach(model, num_outputs=2)
    b2 = torch.tensor([[0.1, 0.2, -0.3], [0.5, -0.1, 0.25]])  # W2's shape
    method.feedback["1.0"] = b2
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    _, y, w2 = forward_by_hand(model, x)
    expected = grads_by_hand(model, x, t, ((y - t) / t.numel()) @ b2)
    assert_grads(model, expected)
    # and the result really differs from backprop's
    assert not torch.allclose(expected["0.0.weight"], grads_by_hand(model, x, t, ((y - t) / 4) @ w2)["0.0.weight"])


def test_fa_restores_the_plain_forward(tiny):
    model, x, t, index = tiny
    run_step(FeedbackAlignment(), model, x, t, index)
    assert "forward" not in vars(model[0][0])


def test_shallow_leaves_hidden_blocks_untouched(tiny):
    model, x, t, index = tiny
    run_step(make_method("shallow"), model, x, t, index)
    assert model[0][0].weight.grad is None and model[0][0].bias.grad is None
    expected = grads_by_hand(model, x, t, torch.zeros(2, 3))
    torch.testing.assert_close(model[1][0].weight.grad, expected["1.0.weight"])


def softmax_loss_gradient(y, t):
    """-∂ℓ(softmax(y))/∂y for ℓ = mean_c BCE, by hand: p_j (g_j - Σ_i g_i p_i), g = ∂ℓ/∂p."""
    p = torch.softmax(y, dim=1)
    g = (p - t) / (p * (1 - p)) / t.shape[1]
    return -(p * (g - (g * p).sum(1, keepdim=True)))


DELAYED = {
    "delayed_error": lambda y, t: t - y,
    "delayed_loss": lambda y, t: -(y - t) / (y * (1 - y)) / t.shape[1],
    "delayed_error_softmax": lambda y, t: t - torch.softmax(y, dim=1),
    "delayed_loss_softmax": softmax_loss_gradient,
    "delayed_error_one_hot": lambda y, t: t * (t - y),
    "delayed_loss_one_hot": lambda y, t: t * (-(y - t) / (y * (1 - y)) / t.shape[1]),
}


@pytest.mark.parametrize("signal", sorted(DELAYED))
def test_f3_uses_the_previous_visit(tiny, signal):
    model, x, t, index = tiny
    method = make_method("f3", signal=signal)
    method.attach(model, num_outputs=2, num_samples=4)
    b1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4]])
    method.feedback = [b1]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    # first visit: the buffer reads as the targets, so the update is DRTP's
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    assert_grads(model, grads_by_hand(model, x, t, t @ b1))
    _, y_first, _ = forward_by_hand(model, x)
    optimizer.step()

    # second visit: the signal comes from the first visit's output, not the current one
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    s = DELAYED[signal](y_first, t)
    assert_grads(model, grads_by_hand(model, x, t, s @ b1))
    _, y_now, _ = forward_by_hand(model, x)
    assert not torch.allclose(y_now, y_first)


@pytest.mark.parametrize("signal", ["delayed_error", "delayed_loss_one_hot"])
def test_f3_buffer_holds_each_samples_last_signal(tiny, signal):
    model, x, t, index = tiny
    method = make_method("f3", signal=signal)
    method.attach(model, num_outputs=2, num_samples=5)
    # visit samples 3 and 1 (rows of x in that order); the others stay unwritten
    model.zero_grad()
    method.step(model, x, t, torch.tensor([3, 1]), BCE)
    _, y, _ = forward_by_hand(model, x)
    plain = DELAYED[signal.replace("_one_hot", "")]
    torch.testing.assert_close(method.buffer.values[[3, 1]], plain(y, t))
    assert method.buffer.written.tolist() == [False, True, False, True, False]
    unwritten_targets = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(method.buffer.read(torch.tensor([0, 2]), unwritten_targets), unwritten_targets)


def test_f3_one_hot_target_is_drtp_and_current_error_is_dfa(tiny):
    model, x, t, index = tiny
    b1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4]])
    for f3_signal, preset in [("one_hot_target", "drtp"), ("current_error", "dfa")]:
        grads = []
        for method in (make_method("f3", signal=f3_signal), make_method(preset)):
            method.attach(model, num_outputs=2, num_samples=2)
            method.feedback = [b1]
            model.zero_grad()
            method.step(model, x, t, index, BCE)
            grads.append([p.grad.clone() for p in model.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)


def test_dfa_feeds_back_the_softmax_error_under_cross_entropy(tiny):
    """With logits y and softmax cross-entropy, DFA's signal is t - softmax(y) = -B·∂L/∂y, not t - y."""
    model, x, t, index = tiny
    model[1][1] = torch.nn.Identity()
    ce = make_objective("ce", "classification")
    method = make_method("dfa")
    method.attach(model, num_outputs=2, num_samples=4)
    b1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4]])
    method.feedback = [b1]
    model.zero_grad()
    method.step(model, x, t, index, ce)
    logits = model(x).detach()
    softmax_error = t - torch.softmax(logits, dim=1)
    w1 = model[0][0].weight.detach()
    h1 = torch.tanh(x @ w1.T + model[0][0].bias.detach())
    delta_a1 = (softmax_error @ b1) * (1 - h1 ** 2)
    torch.testing.assert_close(model[0][0].weight.grad, delta_a1.T @ x)
    # and it is the true output gradient, rescaled by the batch size
    logits.requires_grad_(True)
    ce(logits, t).backward()
    torch.testing.assert_close(softmax_error, -len(x) * logits.grad)


def test_dfa_from_the_head_input_carries_the_error_back_through_the_head_first(tiny):
    """``feedback_from="head-input"`` (Launay et al. 2020): the hidden block receives (e J_head) B with
    J_head the head's Jacobian at this pass (here a Linear and a sigmoid: e ⊙ σ'(a2) W2), and B is 3 × 3."""
    model, x, t, index = tiny
    ce = make_objective("ce", "classification")
    model[1][1] = torch.nn.Identity()
    method = make_method("dfa", feedback_from="head-input")
    method.attach(model, num_outputs=2, num_samples=4)
    b1 = torch.tensor([[0.3, -0.5, 0.9], [-0.7, 0.2, 0.4], [0.1, 0.8, -0.6]])
    method.feedback = [b1]
    model.zero_grad()
    method.step(model, x, t, index, ce)
    h1, _, w2 = forward_by_hand(model, x)
    error = t - torch.softmax(h1 @ w2.T + model[1][0].bias.detach(), dim=1)
    delta_a1 = (error @ w2 @ b1) * (1 - h1 ** 2)
    torch.testing.assert_close(model[0][0].weight.grad, delta_a1.T @ x)
    assert method.signal_width == 3 and method.execution == "autograd"


def test_feedback_from_the_head_input_is_refused_where_it_cannot_work(tiny):
    with pytest.raises(BeyondBPError, match="carried back through the head at this pass"):
        make_method("drtp", feedback_from="head-input", execution="forward")
    with pytest.raises(BeyondBPError, match="buffer_rank store keeps only r dimensions"):
        make_method("f3:delayed_error_softmax", feedback_from="head-input", buffer_rank=4)
    from beyondbp.models.vit import MeanTokens
    tokens = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 4)),
                                 torch.nn.Sequential(MeanTokens(), torch.nn.Linear(4, 2)))
    method = make_method("dfa", feedback_from="head-input")
    method.attach(tokens, num_outputs=2, num_samples=4)
    with pytest.raises(UnsupportedModelError, match=r"shaped like the signal but for its width, \[4\] \+ \[width\]"):
        method.step(tokens, torch.randn(4, 3, 2), torch.eye(2)[[0, 1, 0, 1]], None,
                    make_objective("ce", "classification"))


def _token_model():
    """[batch, 3 tokens, 2] -> Linear(2, 4) per token -> mean over tokens -> Linear(4, 2) -> sigmoid."""
    from beyondbp.models.vit import MeanTokens
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 4)),
                               torch.nn.Sequential(MeanTokens(), torch.nn.Linear(4, 2), torch.nn.Sigmoid()))


@pytest.mark.parametrize("token_feedback", ["shared", "per-token"])
def test_token_sequences_get_shared_or_per_token_feedback(token_feedback):
    model = _token_model()
    x, t = torch.randn(2, 3, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    method = DirectFeedback("one_hot_target", token_feedback=token_feedback)
    method.attach(model, num_outputs=2, num_samples=2)
    model.zero_grad()
    method.step(model, x, t, torch.tensor([0, 1]), BCE)
    (b,) = method.feedback
    if token_feedback == "shared":
        assert b.shape == (2, 4)
        delta = (t @ b / 3).unsqueeze(1).expand(2, 3, 4)  # the same for every token, / number of tokens
    else:
        assert b.shape == (2, 12)
        delta = (t @ b).view(2, 3, 4)
    expected = torch.einsum("btj,bti->ji", delta, x)
    torch.testing.assert_close(model[0][0].weight.grad, expected)
    torch.testing.assert_close(model[0][0].bias.grad, delta.sum((0, 1)))
