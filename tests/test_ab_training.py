"""AB-training with gloo on localhost, 2 processes: factorisation, group training, both synchronisations,
bytes, and a resumed run that equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from beyondbp.ab_training import ABTraining
from beyondbp.cli import main
from beyondbp.methods import make_method
from beyondbp.models import mlp
from beyondbp.objectives import make_objective
from conftest import blobs
from test_distributed import DEADLINE, join, run_two


def ab_worker(rank: int, port: int, sync: str, out: str, die: bool) -> None:
    """Drive the schedule by hand: 2 warm-up steps, factor, 4 group steps, synchronise, 2 full-rank steps."""
    parallel = join(rank, port)
    objective = make_objective("bce", "classification")
    torch.manual_seed(0)
    model = mlp(4, 3, hidden=(16, 16), output_activation=objective.output_activation())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ab = ABTraining(parallel, start=3, sync_every=4, full_steps=2, rank=0.5, sync=sync, min_size=4)
    method = make_method("bp")
    method.attach(model, num_outputs=3)
    data = blobs().train
    part = parallel.local_slice(40)
    x, t, index = data.x[:40][part], data.t[:40][part], torch.arange(40)[part]

    def step(schedule: bool = True):
        optimizer.zero_grad(set_to_none=True)
        loss = method.step(model, x, t, index, objective).loss.item()
        ab.average_gradients(model, loss, len(x))
        optimizer.step()
        return ab.after_step(model, optimizer) if schedule else None

    result = {}
    step(), step()
    step(schedule=False)
    result["full"] = {name: model.get_submodule(name).weight.detach().clone() for name in ab.eligible(model)}
    event = ab.after_step(model, optimizer)
    layers = ab.layers(model)
    result["event"] = event
    result["factored"] = {name: (layer.a.detach().clone(), layer.b.detach().clone()) for name, layer in layers.items()}
    sent = parallel.bytes_sent
    step()
    result["group_step_bytes"] = parallel.bytes_sent - sent
    result["trainable"] = {name: [layer.a.requires_grad, layer.b.requires_grad] for name, layer in layers.items()}
    step(), step()
    step(schedule=False)
    result["before_sync"] = {name: (layer.a.detach().clone(), layer.b.detach().clone())
                             for name, layer in layers.items()}
    result["sync_event"] = ab.after_step(model, optimizer)
    result["synced"] = {name: model.get_submodule(name).weight.detach().clone() for name in layers}
    result["shared"] = [p.detach().clone() for name, p in model.named_parameters()]
    step()
    result["refactor_event"] = step()
    torch.save(result, f"{out}/rank{rank}.pt")
    parallel.close(completed=True)


@pytest.fixture(scope="module", params=["factors", "products"])
def ranks(request, tmp_path_factory):
    return request.param, run_two(tmp_path_factory.mktemp(request.param), request.param, target=ab_worker)


def test_factors_are_the_truncated_svd_of_the_same_weight(ranks):
    _, (r0, r1) = ranks
    assert r0["event"]["ab_phase"] == "groups" and r0["event"]["ranks"] == {"0.1": 2, "1.0": 8}
    for name, weight in r0["full"].items():
        torch.testing.assert_close(weight, r1["full"][name])  # data parallel so far
        u, s, vh = torch.linalg.svd(weight)
        r = r0["event"]["ranks"][name]
        a, b = r0["factored"][name]
        torch.testing.assert_close(a @ b, u[:, :r] @ torch.diag(s[:r]) @ vh[:r], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a, r1["factored"][name][0])


def test_groups_train_one_factor_each_and_send_only_it(ranks):
    _, (r0, r1) = ranks
    assert all(flags == [True, False] for flags in r0["trainable"].values())
    assert all(flags == [False, True] for flags in r1["trainable"].values())
    for name, (a, b) in r0["before_sync"].items():
        a_start, b_start = r0["factored"][name]
        assert torch.equal(b, b_start) and not torch.equal(a, a_start)  # rank 0 trained A only
        assert torch.equal(r1["before_sync"][name][0], a_start) and not torch.equal(r1["before_sync"][name][1], b_start)
    # per group step: the factor this rank trains (group all-reduce) and every other parameter
    # (all ranks), each all-reduce with 2 more numbers (the loss and the sample count), float32
    shared = 4 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3 - sum(w.numel() for w in r0["full"].values())
    a_numel = sum(a.numel() for a, _ in r0["factored"].values())
    b_numel = sum(b.numel() for _, b in r0["factored"].values())
    assert r0["group_step_bytes"] == 4 * (shared + 2 + a_numel + 2)
    assert r1["group_step_bytes"] == 4 * (shared + 2 + b_numel + 2)


def test_synchronisation_gives_every_rank_the_same_full_weight(ranks):
    sync, (r0, r1) = ranks
    assert r0["sync_event"]["ab_phase"] == "full" and r0["sync_event"]["ranks"] == {}
    for name, weight in r0["synced"].items():
        a0, b0 = r0["before_sync"][name]
        a1, b1 = r1["before_sync"][name]
        expected = a0 @ b1 if sync == "factors" else (a0 @ b0 + a1 @ b1) / 2
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weight, r1["synced"][name])
    for p0, p1 in zip(r0["shared"], r1["shared"]):
        torch.testing.assert_close(p0, p1)
    assert r0["refactor_event"]["ab_phase"] == "groups"  # after full_steps = 2 full-rank steps


def test_ab_without_two_processes_is_refused(capsys):
    assert main(["train", "--method", "bp", "--lowrank", "ab", "--epochs", "1"]) == 2
    assert "--nproc 2" in capsys.readouterr().err
    assert main(["train", "--method", "fg", "--lowrank", "ab", "--nproc", "2"]) == 2
    assert "does not compose with fg" in capsys.readouterr().err


@pytest.mark.slow
def test_ab_run_resumes_across_epochs_that_end_inside_a_group_phase(tmp_path):
    def train(out, epochs: int, *extra: str) -> list[dict]:
        command = [sys.executable, "-m", "beyondbp", "train", "--method", "f3", "--nproc", "2", "--hidden", "64,64",
                   "--epochs", str(epochs), "--no-progress", "--out", str(out), "--lowrank", "ab",
                   "--ab-start", "5", "--ab-sync-every", "6", "--ab-full-steps", "2", *extra]
        result = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    whole = train(tmp_path / "whole", 2)
    train(tmp_path / "parts", 1)
    parts = train(tmp_path / "parts", 2, "--resume")
    assert [r["test_loss"] for r in whole] == [r["test_loss"] for r in parts]
    assert any(event.get("epoch_end") for event in whole[0]["ab"])  # 15 steps: the epoch ended mid-group
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["comm_bytes_per_step"] > 0
