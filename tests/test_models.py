"""CNN, ViT and the F³ paper's transformer: shapes for every input size, every method lowers the loss, and
a conv block's DFA update by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.methods import make_method
from beyondbp.models import build_model
from beyondbp.objectives import make_objective

BCE = make_objective("bce", "classification")
SMALL = {"cnn": {"channels": (4, 8), "hidden": (16,)},
         "vit": {"depth": 2, "width": 16, "heads": 2, "mlp": 32},
         "f3vit": {"depth": 3, "width": 32, "heads": 2, "mlp": 16}}


@pytest.mark.parametrize("model", ["cnn", "vit", "f3vit"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_shapes(model, shape):
    net = build_model(model, shape, 10, nn.Sigmoid(), **SMALL[model])
    out = net(torch.randn(3, *shape))
    assert out.shape == (3, 10) and ((0 < out) & (out < 1)).all()


def test_vit_with_wider_heads_builds():
    """Heads of dimension 64 on tokens of 512: the attention's projections are heads × head_dim wide."""
    net = build_model("vit", (1, 28, 28), 10, nn.Identity(), depth=5, width=512, heads=8, head_dim=64, mlp=128,
                      patch=7, activation="tanh")
    assert len(net) == 7 and net[1].attention.query.out_features == 512
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_f3vit_paper_setting_builds():
    """Depth 5: four transformer blocks (the first behind the dense embedding) on 16 tokens of 32
    features, the head's hidden layer, the output layer; every hidden block puts out 512 values."""
    net = build_model("f3vit", (1, 28, 28), 10, nn.Identity(), depth=5, width=512, heads=8, head_dim=64,
                      mlp=128, patch=7, activation="tanh")
    assert len(net) == 6
    assert net[0][1].in_features == 784 and net[0][2].unflattened_size == (16, 32)
    attention = net[1][1].attention
    assert attention.query.in_features == 32 and attention.query.out_features == 512
    assert isinstance(net[4][1], nn.Tanh) and net[4][0].out_features == 512
    h = torch.randn(2, 1, 28, 28)
    for block in net[:-1]:
        h = block(h)
        assert h.shape == (2, 512)
    assert net[-1](h).shape == (2, 10)


def test_f3vit_gives_every_token_position_its_own_feedback_columns():
    """Its blocks put out flat ``[B, width]``, so direct feedback draws C × width, not one C × token-width
    matrix shared by the tokens as on the standard ViT."""
    net = build_model("f3vit", (1, 8, 8), 4, nn.Sigmoid(), **SMALL["f3vit"])
    method = make_method("dfa")
    method.attach(net, num_outputs=4)
    method.step(net, torch.randn(5, 1, 8, 8), torch.eye(4)[torch.arange(5) % 4], torch.arange(5), BCE)
    assert [tuple(b.shape) for b in method.feedback] == [(4, 32)] * 3


def test_sizes_that_do_not_fit_are_refused():
    with pytest.raises(BeyondBPError, match="patch size 3 does not divide"):
        build_model("vit", (1, 8, 8), 10, nn.Identity(), patch=3)
    with pytest.raises(BeyondBPError, match="halve 8x8 too often"):
        build_model("cnn", (1, 8, 8), 10, nn.Identity(), channels=(4, 4, 4, 4))
    with pytest.raises(BeyondBPError, match="width 100 is not a multiple of the 16 tokens"):
        build_model("f3vit", (1, 28, 28), 10, nn.Identity(), width=100, patch=7)
    with pytest.raises(BeyondBPError, match="depth of at least 2"):
        build_model("f3vit", (1, 28, 28), 10, nn.Identity(), depth=1)


METHODS = ["bp", "shallow", "fa", "usf", "frsf", "brsf", "ldfa:r4", "dfa", "drtp", "f3", "f3:delayed_error_softmax",
           "fg:k8-projection", "fg:k8-mean-activities"]


@pytest.mark.parametrize("model", ["cnn", "vit", "f3vit"])
@pytest.mark.parametrize("spec", METHODS)
def test_every_method_lowers_the_loss_and_moves_the_hidden_weights(model, spec):
    """30 steps on one batch: the loss falls, and the hidden blocks move (they would not if a method's feedback
    were zero) except under shallow, whose hidden blocks must stay where they are."""
    torch.manual_seed(0)
    net = build_model(model, (1, 8, 8), 4, nn.Sigmoid(), **SMALL[model])
    hidden = [p for block in list(net)[:-1] for p in block.parameters()]
    start = [p.detach().clone() for p in hidden]
    x = torch.randn(16, 1, 8, 8)
    t = torch.eye(4)[torch.arange(16) % 4]
    index = torch.arange(16)
    method = make_method(spec)
    method.attach(net, num_outputs=4, num_samples=16)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        losses.append(method.step(net, x, t, index, BCE).loss.item())
        optimizer.step()
    assert losses[-1] < 0.9 * losses[0], losses
    moved = [(p - p0).norm().item() / (p0.norm().item() + 1e-12) for p, p0 in zip(hidden, start) if p0.dim() > 1]
    if spec == "shallow":
        assert max(moved) == 0
    else:
        assert min(moved) > 1e-3, moved
