"""Sign-symmetry and low-dimensional feedback (LDFA) against their formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.methods import make_method
from beyondbp.models import mlp
from beyondbp.objectives import make_objective
from test_methods_hand import assert_grads, forward_by_hand, grads_by_hand

BCE = make_objective("bce", "classification")


def test_usf_sends_the_error_through_sign_of_w(tiny):
    model, x, t, index = tiny
    method = make_method("usf")
    method.attach(model, num_outputs=2)
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    _, y, w2 = forward_by_hand(model, x)
    assert_grads(model, grads_by_hand(model, x, t, ((y - t) / t.numel()) @ (w2.sign() * w2.abs().mean())))


@pytest.mark.parametrize("variant,changes", [("frsf", False), ("brsf", True)])
def test_random_magnitudes_fixed_or_redrawn(tiny, variant, changes):
    model, x, t, index = tiny
    method = make_method(variant)
    method.attach(model, num_outputs=2)
    first, second = (method.factors("1.0", model[1][0])[0] for _ in range(2))
    assert torch.equal(first.sign(), model[1][0].weight.sign())
    assert (not torch.equal(first, second)) == changes


def ldfa_setup(rank: int, rule: str = "normative", feedback_lr: float = 0.0):
    torch.manual_seed(0)
    model = mlp(6, 3, hidden=(5, 4), output_activation=nn.Sigmoid())
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(8, 6, generator=g), torch.eye(3)[torch.randint(3, (8,), generator=g)]
    method = make_method(f"ldfa:r{rank}-{rule}", feedback_lr=feedback_lr)
    method.attach(model, num_outputs=3)
    return model, method, x, t, torch.arange(8)


def test_full_rank_ldfa_is_backprop():
    model, method, x, t, index = ldfa_setup(rank=10)
    for name, layer in method.layers.items():
        torch.testing.assert_close(method.p[name] @ method.q[name], layer.weight.detach(), rtol=1e-5, atol=1e-6)
    method.step(model, x, t, index, BCE)
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    BCE(model(x), t).backward()
    for a, p in zip(ours, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_low_rank_ldfa_differs_from_backprop():
    model, method, x, t, index = ldfa_setup(rank=1)
    assert method.p["1.0"].shape == (4, 1) and method.q["1.0"].shape == (1, 5)
    method.step(model, x, t, index, BCE)
    hidden = model[0][1].weight.grad.clone()
    model.zero_grad()
    BCE(model(x), t).backward()
    assert not torch.allclose(hidden, model[0][1].weight.grad, atol=1e-6)


def test_normative_rule_drives_pq_to_w():
    model, method, x, t, index = ldfa_setup(rank=4, feedback_lr=0.05)
    torch.manual_seed(3)
    for name in method.layers:
        method.p[name] += 0.3 * torch.randn_like(method.p[name])
    errors = []
    for _ in range(30):  # W stays fixed: no optimizer step
        model.zero_grad()
        method.step(model, x, t, index, BCE)
        errors.append(sum((method.p[n] @ method.q[n] - layer.weight).norm().item()
                          for n, layer in method.layers.items()))
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.5 * errors[0]


def test_local_rule_by_hand():
    model, method, x, t, index = ldfa_setup(rank=2, rule="local", feedback_lr=0.1)
    p0, q0 = method.p["1.0"].clone(), method.q["1.0"].clone()
    model.zero_grad()
    method.step(model, x, t, index, BCE)
    g = model[1][0].weight.grad  # δᵀx of that layer
    torch.testing.assert_close(method.p["1.0"], p0 - 0.1 * g @ q0.T)
    torch.testing.assert_close(method.q["1.0"], q0 - 0.1 * p0.T @ g)


def test_ldfa_options_are_checked():
    with pytest.raises(BeyondBPError, match="unknown feedback_rule .nope.; known: normative, local"):
        make_method("ldfa", feedback_rule="nope")
    with pytest.raises(BeyondBPError, match="unknown ldfa variant part 'x'"):
        make_method("ldfa:r2-x")


def encoder_classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(3, 8), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                         nn.Flatten(), nn.Linear(4 * 8, 2), nn.Sigmoid())


@pytest.mark.parametrize("spec", ["fa", "usf"])
def test_attention_projections_are_layers_and_feedback_equal_to_w_gives_backprop(spec):
    """FA with every feedback matrix set to its W (and usf, whose sign(W) differs) on nn.TransformerEncoder:
    the attention's q, k, v and output projections are covered; with B = W the step is backprop's."""
    x, labels = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1, 0, 1, 0])
    model = encoder_classifier()
    method = make_method(spec)
    method.attach(model, num_outputs=2)
    assert {"1.layers.0.self_attn.q_proj", "1.layers.0.self_attn.v_proj",
            "1.layers.1.self_attn.out_proj"} <= set(method.layers)
    if spec == "fa":
        method.feedback = {name: layer.weight.detach().flatten(1).clone() for name, layer in method.layers.items()}
    method.step(model, x, labels, None, BCE)
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    exact = encoder_classifier()
    BCE(exact(x), nn.functional.one_hot(labels, 2).float()).backward()
    attention = "1.layers.0.self_attn.in_proj_weight"
    if spec == "fa":
        for name, p in exact.named_parameters():
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-5, atol=1e-6)
    else:  # sign feedback: the first layer's attention gets another gradient than backprop's
        assert not torch.allclose(ours[attention], dict(exact.named_parameters())[attention].grad)
