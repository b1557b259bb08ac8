"""Forward-only execution and DFA without a backward chain give the plain implementation's gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.methods import make_method
from beyondbp.methods.signals import SIGNALS
from beyondbp.models import mlp
from beyondbp.objectives import make_objective

BCE = make_objective("bce", "classification")


def deep_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(5, 3, hidden=(7, 6, 4), output_activation=nn.Sigmoid())


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 5, generator=g)
    t = torch.nn.functional.one_hot(torch.randint(3, (8,), generator=g), 3).float()
    return x, t, torch.arange(8)


def grads_after_two_steps(spec: str, execution: str) -> list[torch.Tensor]:
    """Two steps on the same batch (so delayed signals are really delayed), SGD in between."""
    model, (x, t, index) = deep_model(), batch()
    method = make_method(spec, execution=execution)
    method.attach(model, num_outputs=3, num_samples=8)
    torch.manual_seed(5)  # the feedback matrices are drawn at the first step
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        method.step(model, x, t, index, BCE)
        grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
        optimizer.step()
    return grads


@pytest.mark.parametrize("spec", ["drtp", "shallow"] + [f"f3:{s}" for s in SIGNALS.names()
                                                       if SIGNALS.get(s).known_in_advance])
def test_forward_execution_equals_autograd(spec):
    forward = grads_after_two_steps(spec, "forward")
    plain = grads_after_two_steps(spec, "autograd")
    for a, b in zip(forward, plain):
        assert (a is None) == (b is None)
        if a is not None:  # float32 rounding: the in-place path multiplies in another order
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation,batch_mean", [("tanh", True), ("sigmoid", False), ("relu", False),
                                                   ("leaky_relu", True)])
def test_in_place_local_updates_equal_autograd(activation, batch_mean):
    """Linear + activation blocks take the in-place path in forward execution; autograd gives the same."""
    grads = []
    for execution in ("forward", "autograd"):
        torch.manual_seed(0)
        model = mlp(5, 3, hidden=(7, 6), activation=activation, output_activation=nn.Sigmoid())
        x, t, index = batch()
        method = make_method("f3:delayed_error", execution=execution, batch_mean=batch_mean)
        method.attach(model, num_outputs=3, num_samples=8)
        torch.manual_seed(5)
        for _ in range(2):  # the second step accumulates into existing .grad
            method.step(model, x, t, index, BCE)
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in grads[0])


@pytest.mark.parametrize("norm", [False, True])
def test_delivering_the_output_first_steps_every_block_after_it_with_the_same_result(norm):
    """A pipeline stage sends its last output before any block updates (``deliver``): the output is the one
    the blocks computed before their steps, and the weights after two steps equal the per-block order's,
    on the in-place path (Linear + tanh) and on autograd's (a LayerNorm in the block)."""
    results = {}
    for deliver in (False, True):
        model = deep_model()
        if norm:
            model[1].insert(1, nn.LayerNorm(6))
        x, t, index = batch()
        hidden = list(model)[:-1]
        method = make_method("drtp", unlocked=True)
        method.attach(model, num_outputs=3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        events, outputs = [], []

        def step_block(params):
            events.append("step")
            optimizer.step()
            for p in params:
                p.grad = None

        method.after_block = step_block
        for _ in range(2):
            s = method.signal_before_pass(t, index)
            send = (lambda h: (events.append("deliver"), outputs.append(h.clone()))) if deliver else None
            h = method.forward_blocks(hidden, x, s, deliver=send)
            if deliver:
                torch.testing.assert_close(outputs[-1], h, rtol=0, atol=0)
        results[deliver] = ([p.detach().clone() for p in model.parameters()], h)
        assert events == (["deliver", "step", "step", "step"] * 2 if deliver else ["step"] * 6)
    for a, b in zip(results[True][0], results[False][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=0, atol=0)
    assert not torch.equal(results[True][0][0], deep_model()[0][1].weight)  # the steps did move the weights


def test_auto_execution_picks_forward_where_the_signal_allows():
    assert make_method("f3").execution == "forward" and make_method("drtp").execution == "forward"
    assert make_method("dfa").execution == "autograd"
    with pytest.raises(BeyondBPError, match="only known after the forward pass"):
        make_method("dfa", execution="forward")
    with pytest.raises(BeyondBPError, match="method 'bp' takes no option 'unlocked'"):
        make_method("bp", unlocked=True)


def test_dfa_without_backward_chain_equals_hooked_full_backward():
    """Reference: the full network graph, with each hidden output's incoming gradient replaced by e B_i
    in a backward hook (the sequential chain of the usual implementations)."""
    model, (x, t, index) = deep_model(), batch()
    method = make_method("dfa")
    method.attach(model, num_outputs=3)
    torch.manual_seed(5)
    method.step(model, x, t, index, BCE)
    ours = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    hidden, h = [], x
    for block in list(model)[:-1]:
        h = block(h)
        hidden.append(h)
    y = model[-1](h)
    loss = BCE(y, t)
    error = (t - y).detach()
    for h_i, b_i in zip(hidden, method.feedback):
        h_i.register_hook(lambda grad, b_i=b_i: error @ b_i)
    loss.backward()
    for a, p in zip(ours, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-6, atol=1e-8)


def test_unlocked_steps_each_block_before_the_next_runs():
    """Each hidden block is stepped as soon as its gradient exists, before the next block runs; the
    outputs passed on were computed before that step, so the result equals the synchronous update."""
    results = {}
    for unlocked in (True, False):
        model, (x, t, index) = deep_model(), batch()
        method = make_method("drtp", unlocked=unlocked, token_feedback="shared")  # no probe: one pass per step
        method.attach(model, num_outputs=3)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        weight = lambda block: next(m for m in block if isinstance(m, nn.Linear)).weight
        initial = [weight(block).clone() for block in model]
        moved_before_next = []

        def check_previous_block(module, inputs, i=None):
            position = list(model).index(module)
            moved_before_next.append(not torch.equal(weight(model[position - 1]), initial[position - 1]))

        for block in list(model)[1:]:
            block.register_forward_pre_hook(check_previous_block)
        if unlocked:
            def step_block(params):
                optimizer.step()
                for p in params:
                    p.grad = None

            method.after_block = step_block
        torch.manual_seed(5)
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            method.step(model, x, t, index, BCE)
            optimizer.step()
        results[unlocked] = [p.detach().clone() for p in model.parameters()]
        assert moved_before_next[:3] == [unlocked] * 3  # first step: blocks 1-3 see their predecessor's update
    for a, b in zip(results[True], results[False]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
