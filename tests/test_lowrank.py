"""OIALR: the switch, re-orthogonalisation, the cut, optimizer state, and resume across shape changes."""

from __future__ import annotations

import json

import torch
from torch import nn

from beyondbp.cli import main
from beyondbp.lowrank import OIALR, LowRankConv2d, LowRankLinear


def two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 48), nn.Tanh(), nn.Linear(48, 3))


def adam_with_state(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(16, 40)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    return optimizer, x


def test_switch_keeps_the_function_and_projects_the_state():
    model = two_layer()
    optimizer, x = adam_with_state(model)
    before, weight = model(x), model[0].weight
    w, m = weight.detach().clone(), optimizer.state[weight]["exp_avg"].clone()
    OIALR(min_size=8).convert(model, optimizer)
    layer = model[0]
    assert isinstance(layer, LowRankLinear) and layer.core is weight and layer.rank == 40
    assert isinstance(model[2], nn.Linear)  # the output layer stays full rank
    torch.testing.assert_close(layer.weight(), w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(optimizer.state[weight]["exp_avg"], layer.u.T @ m @ layer.v)
    assert sum(p is weight for p in optimizer.param_groups[0]["params"]) == 1


def test_reorthogonalization_keeps_the_product_and_orthonormal_bases():
    model = two_layer()
    optimizer, x = adam_with_state(model)
    OIALR(min_size=8).convert(model, optimizer)
    for _ in range(3):  # train the core so that it is no longer diagonal
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    layer = model[0]
    product, m = layer.weight().detach().clone(), optimizer.state[layer.core]["exp_avg"].clone()
    u_old, v_old = layer.u.clone(), layer.v.clone()
    OIALR.reorthogonalize(layer, optimizer)
    torch.testing.assert_close(layer.weight(), product, rtol=1e-4, atol=1e-5)
    eye = torch.eye(layer.rank)
    torch.testing.assert_close(layer.u.T @ layer.u, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.v.T @ layer.v, eye, atol=1e-5, rtol=0)
    core = layer.core.detach()
    assert torch.allclose(core, torch.diag(core.diagonal()))
    # the first moment is the same linear map in the new coordinates: U m Vᵀ is unchanged
    torch.testing.assert_close(layer.u @ optimizer.state[layer.core]["exp_avg"] @ layer.v.T,
                               u_old @ m @ v_old.T, rtol=1e-4, atol=1e-7)


def test_cut_removes_exactly_the_small_singular_values_and_restricts_the_state():
    u, _ = torch.linalg.qr(torch.randn(10, 6))
    v, _ = torch.linalg.qr(torch.randn(8, 6))
    sigma = torch.tensor([5.0, 3.0, 1.0, 0.76, 0.74, 0.1])  # cutoff 0.15 * 5 = 0.75
    core = nn.Parameter(torch.diag(sigma))
    layer = LowRankLinear(u, core, v, None)
    optimizer = torch.optim.Adam([core])
    exp_avg, exp_avg_sq = torch.randn(6, 6), torch.rand(6, 6)
    optimizer.state[core] = {"step": torch.tensor(3.0), "exp_avg": exp_avg.clone(), "exp_avg_sq": exp_avg_sq.clone()}
    assert OIALR(cutoff=0.15, max_cut=1.0).cut(layer, optimizer) == 4
    assert layer.rank == 4 and layer.u.shape == (10, 4) and layer.v.shape == (8, 4)
    torch.testing.assert_close(layer.core.detach(), torch.diag(sigma[:4]))
    torch.testing.assert_close(optimizer.state[core]["exp_avg"], exp_avg[:4, :4])
    torch.testing.assert_close(optimizer.state[core]["exp_avg_sq"], exp_avg_sq[:4, :4])


def test_cut_is_capped_per_update():
    u, _ = torch.linalg.qr(torch.randn(10, 8))
    layer = LowRankLinear(u, nn.Parameter(torch.diag(torch.tensor([9.0] + [0.01] * 7))), u[:, :8].clone(), None)
    assert OIALR(cutoff=0.15, max_cut=0.25).cut(layer, None) == 6  # at most 2 of 8 directions per update


def run_args(out, epochs, extra=()):
    return ["train", "--method", "f3", "--hidden", "64,64", "--epochs", str(epochs), "--lowrank", "oialr",
            "--oialr-start", "40", "--oialr-every", "20", "--oialr-cutoff", "0.3", "--no-progress",
            "--out", str(out), *extra]


def test_ranks_fall_and_resume_across_shape_changes(tmp_path):
    assert main(run_args(tmp_path / "whole", 4)) == 0
    assert main(run_args(tmp_path / "parts", 2)) == 0
    assert main(run_args(tmp_path / "parts", 4, ["--resume"])) == 0
    whole = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    parts = [json.loads(line) for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["ranks"] for r in whole] == [r["ranks"] for r in parts]
    assert [r["test_loss"] for r in whole] == [r["test_loss"] for r in parts]
    ranks = [r["ranks"] for r in whole if r["ranks"]]
    assert ranks[-1]["0.1"] < 64 and whole[-1]["trainable_fraction"] < whole[0]["trainable_fraction"]
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["trainable_fraction"] == whole[-1]["trainable_fraction"]
    assert (tmp_path / "whole" / "ranks.png").is_file()


def test_layerwise_methods_are_refused(capsys):
    assert main(["train", "--method", "fa", "--lowrank", "oialr", "--epochs", "1"]) == 2
    assert "layer-wise" in capsys.readouterr().err


def test_conv2d_layers_become_low_rank_with_the_same_function():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 40, 3, padding=1, stride=2), nn.Tanh(), nn.Flatten(), nn.Linear(40 * 9, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 4, 6, 6)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    before, kernel = model(x).detach(), model[0].weight.detach().clone()
    schedule = OIALR(min_size=8, cutoff=0.5, max_cut=1.0)
    schedule.convert(model, optimizer)
    layer = model[0]
    assert isinstance(layer, LowRankConv2d) and layer.rank == 36 and isinstance(model[3], nn.Linear)
    torch.testing.assert_close(layer.weight(), kernel.reshape(40, 36), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    assert optimizer.state[layer.core]["exp_avg"].shape == (36, 36)
    losses = []
    for _ in range(5):  # the core trains like any parameter
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    schedule.reorthogonalize(layer, optimizer)
    kept = schedule.cut(layer, optimizer)
    sigma = layer.core.detach().diagonal()  # diagonal after re-orthogonalisation, sorted
    assert kept == layer.rank < 36 and sigma[-1] >= 0.5 * sigma[0] - 1e-5
