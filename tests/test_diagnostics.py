"""Alignment diagnostics: exact for backprop, by hand for FA, and measuring changes nothing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from beyondbp.diagnostics import alignment
from beyondbp.methods import make_method
from beyondbp.models import mlp
from beyondbp.objectives import make_objective

BCE = make_objective("bce", "classification")


def setup(spec: str):
    torch.manual_seed(0)
    model = mlp(6, 3, hidden=(8, 5), output_activation=nn.Sigmoid())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 6, generator=g)
    t = torch.eye(3)[torch.randint(3, (10,), generator=g)]
    method = make_method(spec)
    method.attach(model, num_outputs=3, num_samples=10)
    method.step(model, x, t, torch.arange(10), BCE)  # draw feedback, fill F³'s buffer once
    return model, method, x, t, torch.arange(10)


def test_backprop_is_perfectly_aligned():
    model, method, x, t, index = setup("bp")
    report = alignment(model, method, x, t, index, BCE)
    for values in [*report["parameters"].values(), *report["layers"].values()]:
        assert values["cosine"] == pytest.approx(1.0, abs=1e-12) and values["norm_ratio"] == pytest.approx(1.0)
        assert values["angle"] == pytest.approx(0.0, abs=1e-4)


def test_output_block_is_exact_and_hidden_blocks_are_not_for_dfa():
    model, method, x, t, index = setup("dfa")
    report = alignment(model, method, x, t, index, BCE)
    assert report["layers"]["2.0"]["cosine"] == pytest.approx(1.0, abs=1e-9)  # output block: true local gradient
    assert report["layers"]["0.1"]["cosine"] < 0.99
    assert [s["block"] for s in report["signals"]] == [0, 1]
    # the last hidden block's true gradient is (y - t)/(BC) ⊙ σ' pushed through W_out; by hand:
    h = model[1](model[0](x))
    y = model[2](h)
    true = (((y - t) / t.numel()) @ model[2][0].weight).detach()
    injected = (t - y).detach() @ method.feedback[1]
    expected = torch.nn.functional.cosine_similarity(injected, true, dim=1).mean().item()
    assert report["signals"][1]["cosine_mean"] == pytest.approx(expected, abs=1e-6)


def test_fa_feedback_angle_by_hand():
    model, method, x, t, index = setup("fa")
    report = alignment(model, method, x, t, index, BCE)
    w, b = model[2][0].weight, method.feedback["2.0"]
    cosine = (w.flatten() @ b.flatten() / (w.norm() * b.norm())).item()
    # both sides are float32 sums, taken in an order that depends on the CPU: compare cosines to its precision
    reported = math.cos(math.radians(report["feedback"]["2.0"]["angle"]))
    assert reported == pytest.approx(cosine, abs=4 * torch.finfo(torch.float32).eps)
    assert report["feedback"]["2.0"]["norm_ratio"] == pytest.approx((b.norm() / w.norm()).item())


@pytest.mark.parametrize("spec", ["f3:delayed_error", "dfa", "fa", "fg:k2-mean", "shallow"])
def test_measuring_changes_nothing(spec):
    model, method, x, t, index = setup(spec)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    weights = [p.detach().clone() for p in model.parameters()]
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in method.state_dict().items()}
    buffer = method.buffer.values.clone() if getattr(method, "buffer", None) is not None else None
    rng = torch.get_rng_state()
    alignment(model, method, x, t, index, BCE)
    assert all(torch.equal(a, p) for a, p in zip(weights, model.parameters()))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    if buffer is not None:
        assert torch.equal(method.buffer.values, buffer)
    after = method.state_dict()
    for key, value in state.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(value, after[key]))


def test_align_every_and_align_command_agree(tmp_path, capsys):
    import json

    from beyondbp.cli import main

    out = tmp_path / "run"
    assert main(["train", "--method", "f3", "--hidden", "16,16", "--epochs", "2", "--align-every", "1",
                 "--no-progress", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("alignment" in r for r in records) and (out / "alignment.png").is_file()
    assert main(["align", "--run", str(out)]) == 0
    measured = json.loads((out / "alignment.json").read_text())
    for layer, values in records[-1]["alignment"]["layers"].items():
        assert measured["layers"][layer]["cosine"] == pytest.approx(values["cosine"], abs=1e-6)
    assert "signal at point 1" in capsys.readouterr().out


def test_ldfa_full_rank_feedback_is_w():
    model, method, x, t, index = setup("ldfa:r10")
    report = alignment(model, method, x, t, index, BCE)
    for layer in ("0.1", "1.0", "2.0"):
        assert report["feedback"][layer]["angle"] == pytest.approx(0.0, abs=0.1)
    assert report["layers"]["0.1"]["cosine"] == pytest.approx(1.0, abs=1e-5)
