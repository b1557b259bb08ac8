"""ResNets and VGGs with batch norm: their sizes against the papers, their feedback points, and every method
training them."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from beyondbp import make_objective
from beyondbp.cli import main
from beyondbp.methods import make_method
from beyondbp.models.registry import build_model


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,millions", [("resnet20", 0.27), ("resnet32", 0.46), ("resnet56", 0.85),
                                           ("resnet18", 11.17), ("vgg16", 14.72)])
def test_sizes_match_the_papers(name, millions):
    """He et al. 2016, Table 6: ResNet-20/32/56 have 0.27M/0.46M/0.85M parameters on CIFAR-10."""
    model = build_model(name, (3, 32, 32), 10, nn.Identity())
    assert round(count(model) / 1e6, 2) == millions
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_shortcut_a_has_no_parameters_and_b_projects():
    a = build_model("resnet20", (3, 32, 32), 10, nn.Identity(), shortcut="A")
    b = build_model("resnet20", (3, 32, 32), 10, nn.Identity(), shortcut="B")
    # two projections (16->32, 32->64): 1x1 convs and their batch norms
    assert count(b) - count(a) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64


def test_any_input_size_and_channels():
    for name in ("resnet20", "vgg11"):
        assert build_model(name, (1, 28, 28), 7, nn.Identity())(torch.randn(2, 1, 28, 28)).shape == (2, 7)
        assert build_model(name, (1, 8, 8), 3, nn.Identity())(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_a_point_at_every_residual_block_by_default_or_per_stage():
    model = build_model("resnet20", (3, 16, 16), 10, nn.Identity())
    method = make_method("dfa")
    method.attach(model, num_outputs=10)
    assert method.points.resolve(torch.randn(2, 3, 16, 16)) == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    staged = make_method("dfa", feedback_points=["layer1", "layer2", "layer3"])
    staged.attach(model, num_outputs=10)
    staged.step(model, torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), None,
                make_objective("ce", "classification"))
    assert all(p.grad is not None for p in model.parameters())


def accuracy(tmp_path, method: str) -> float:
    out = tmp_path / method.replace(":", "-")
    assert main(["train", "--method", method, "--model", "resnet20", "--loss", "ce", "--dataset", "digits",
                 "--epochs", "2", "--lr", "3e-3", "--no-progress", "--out", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())["test_accuracy"]


def test_every_method_trains_a_batch_norm_resnet(tmp_path):
    """ResNet-20 on digits, 2 epochs (measured: bp 0.96, usf 0.96, fa 0.90, dfa 0.83, drtp 0.76, shallow
    0.28): layer-wise methods near backprop, direct ones well above training the head alone."""
    result = {m: accuracy(tmp_path, m) for m in ("bp", "shallow", "usf", "dfa", "drtp")}
    assert result["bp"] > 0.9 and result["usf"] > 0.9
    assert min(result["dfa"], result["drtp"]) > result["shallow"] + 0.25
