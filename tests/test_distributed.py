"""Data-parallel training with gloo on localhost, 2 processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import beyondbp.launch as launch_module
from beyondbp.distributed import DataParallel
from beyondbp.errors import BeyondBPError
from beyondbp.experiment import SUMMARY_NAME, RunConfig
from beyondbp.launch import launch
from beyondbp.methods import make_method
from beyondbp.models import mlp
from beyondbp.objectives import make_objective
from beyondbp.train import Trainer
from conftest import blobs

pytestmark = pytest.mark.slow  # several processes each

DEADLINE = 180  # seconds: a hung collective fails the test instead of CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer(spec: str | tuple[str, dict], parallel=None) -> Trainer:
    """``spec``: a method's name, or its name and options."""
    name, options = (spec, {}) if isinstance(spec, str) else spec
    torch.manual_seed(0)
    objective = make_objective("bce", "classification")
    model = mlp(4, 3, hidden=(16, 16), output_activation=objective.output_activation())
    return Trainer(model, make_method(name, **options), torch.optim.Adam(model.parameters(), lr=1e-2), objective,
                   progress=False, parallel=parallel)


def join(rank: int, port: int) -> DataParallel:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    return DataParallel(rank, 2, torch.device("cpu"))


def worker(rank: int, port: int, spec: str, out: str, die: bool) -> None:
    parallel = join(rank, port)
    if die and rank == 1:
        os._exit(0)  # a rank that dies right after joining
    t = trainer(spec, parallel)
    try:
        t.fit(blobs().train, epochs=2, batch_size=10, seed=4)
        result = {"params": [p.detach() for p in t.model.parameters()],
                  "buffer": t.method.buffer.values if getattr(t.method, "buffer", None) is not None else None,
                  "class_sum": getattr(getattr(t.method, "buffer", None), "class_sum", None)}
    except BeyondBPError as error:
        result = {"error": str(error)}
    torch.save(result, f"{out}/rank{rank}.pt")
    parallel.close(completed="error" not in result)


def fg_worker(rank: int, port: int, spec: str, out: str, die: bool) -> None:
    """One fg step with the exchange of k derivatives, and the same step averaging full estimates."""
    parallel = join(rank, port)
    objective = make_objective("bce", "classification")
    torch.manual_seed(0)
    model = mlp(4, 3, hidden=(16,), output_activation=objective.output_activation())
    data = blobs().train
    part = parallel.local_slice(20)
    x, t, index = data.x[:20][part], data.t[:20][part], torch.arange(20)[part]
    method = make_method(spec)
    method.attach(model, num_outputs=3)

    def estimate(exchange: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        method.parallel = parallel if exchange else None
        torch.manual_seed(7)
        method.step(model, x, t, index, objective)
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    exchanged = estimate(exchange=True)
    sent = parallel.bytes_sent
    full = estimate(exchange=False)
    dist.all_reduce(full)
    torch.save({"exchanged": exchanged, "averaged": full / 2, "bytes": sent}, f"{out}/rank{rank}.pt")
    parallel.close(completed=True)


def run_two(tmp_path, spec: str, die: bool = False, target=worker) -> list[dict]:
    """Every surviving rank's saved result. A rank that saved its result and then aborted while the
    process exited (gloo's teardown, a known PyTorch issue) does not fail the test; one that saved
    nothing does, with the exit codes."""
    context = mp.spawn(target, args=(free_port(), spec, str(tmp_path), die), nprocs=2, join=False)
    deadline = time.monotonic() + DEADLINE
    while any(process.is_alive() for process in context.processes):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the 2-process run did not finish within {DEADLINE} s")
        time.sleep(0.1)
    paths = [tmp_path / f"rank{r}.pt" for r in range(2 if not die else 1)]
    if not all(path.is_file() for path in paths):
        pytest.fail(f"a rank saved no result; exit codes {[process.exitcode for process in context.processes]}")
    return [torch.load(path) for path in paths]


@pytest.mark.parametrize("spec", ["bp", "fg:k4-projection"])
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path, spec):
    ranks = run_two(tmp_path, spec)
    single = trainer(spec)
    single.fit(blobs().train, epochs=2, batch_size=20, seed=4)
    for a, b, p in zip(ranks[0]["params"], ranks[1]["params"], single.model.parameters()):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, p.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["mean", "projection"])
def test_fg_exchanges_k_derivatives_and_rebuilds_the_averaged_estimate(tmp_path, aggregation):
    ranks = run_two(tmp_path, f"fg:k4-{aggregation}", target=fg_worker)
    for rank in ranks:
        torch.testing.assert_close(rank["exchanged"], rank["averaged"], rtol=1e-5, atol=1e-7)
        assert rank["bytes"] == (4 + 2) * 4  # k derivatives, the loss and the sample count, as float32
    assert torch.equal(ranks[0]["exchanged"], ranks[1]["exchanged"])


@pytest.mark.parametrize("init", ["target", "class_mean"])
def test_f3_buffer_is_the_same_on_every_rank(tmp_path, init):
    ranks = run_two(tmp_path, ("f3:delayed_error", {"buffer_init": init}))
    assert torch.equal(ranks[0]["buffer"], ranks[1]["buffer"])
    assert (ranks[0]["buffer"] != 0).any(dim=1).all()  # every sample's row was written, by one rank or the other
    if init == "class_mean":  # both ranks counted every rank's rows: the same class means
        assert torch.equal(ranks[0]["class_sum"], ranks[1]["class_sum"])
        torch.testing.assert_close(ranks[0]["class_sum"], blobs().train.t.T @ ranks[0]["buffer"])
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)


def test_a_dead_rank_makes_the_other_fail_clearly(tmp_path):
    started = time.monotonic()
    survivor = run_two(tmp_path, "bp", die=True)[0]
    assert "a collective failed" in survivor["error"]
    assert time.monotonic() - started < 120


def cli_train(out, epochs: int, *extra: str, background: bool = False):
    command = [sys.executable, "-m", "beyondbp", "train", "--method", "f3", "--nproc", "2", "--hidden", "32",
               "--epochs", str(epochs), "--no-progress", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if background:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=DEADLINE)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def metrics(out) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_nproc_run_killed_mid_training_resumes_to_the_same_result(tmp_path):
    epochs = 6
    out = cli_train(tmp_path / "whole", epochs)
    assert out.count("test_accuracy") == 1  # only rank 0 reports
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["comm_bytes_per_step"] > 0
    assert all(r["comm_bytes_per_step"] > 0 for r in metrics(tmp_path / "whole"))  # logged every epoch

    killed = cli_train(tmp_path / "parts", epochs, background=True)
    deadline = time.monotonic() + DEADLINE
    while not (tmp_path / "parts" / "checkpoint.pt").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)  # the launcher, torchrun and both ranks
    killed.wait()
    assert len(metrics(tmp_path / "parts")) < epochs  # killed before the end
    cli_train(tmp_path / "parts", epochs, "--resume")
    whole, parts = metrics(tmp_path / "whole"), metrics(tmp_path / "parts")
    assert [r["test_loss"] for r in whole] == [r["test_loss"] for r in parts]


def fake_torchrun(write_summary: bool, returncode: int):
    """Stands in for ``subprocess.run`` in :func:`beyondbp.launch.launch`."""
    def run(command, **kwargs):
        if write_summary:
            (Path(command[-1]) / SUMMARY_NAME).write_text(json.dumps({"test_accuracy": 0.9}))
        return subprocess.CompletedProcess(command, returncode)
    return run


def test_a_launched_run_that_finished_survives_a_crash_at_exit(tmp_path, monkeypatch, capsys):
    config = RunConfig(nproc=2)
    monkeypatch.setattr(launch_module.subprocess, "run", fake_torchrun(write_summary=True, returncode=-6))
    assert launch(config, tmp_path / "done") == {"test_accuracy": 0.9}
    assert "finished and wrote its outputs, but a process exited with code -6" in capsys.readouterr().err
    # a summary left by an earlier run does not count: this run wrote none
    monkeypatch.setattr(launch_module.subprocess, "run", fake_torchrun(write_summary=False, returncode=-6))
    with pytest.raises(BeyondBPError, match=r"2-process run in .* failed \(exit -6\)"):
        launch(config, tmp_path / "done")


@pytest.mark.slow
def test_a_failing_process_leaves_no_torchrun_traceback(tmp_path):
    """The launcher's torchrun passes a process's exit code through and prints nothing of its own."""
    script = tmp_path / "fail.py"
    script.write_text("import os, sys\nif os.environ['RANK'] == '1':\n    sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-m", "beyondbp.quiet_torchrun", "--standalone", "--nproc-per-node=2",
                           str(script)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=120)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr and "failed" not in done.stderr


@pytest.mark.slow
def test_data_parallel_ranks_warn_once_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "beyondbp", "train", "--nproc", "2", "--lr", "1e9", "--epochs", "1",
                           "--loss", "ce", "--out", str(tmp_path / "run"), "--no-progress"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if "more than twice the first step" in line]
    assert len(warnings) == 1 and warnings[0].startswith("beyondbp: warning: epoch 1:")
    assert "Traceback" not in done.stderr and "OMP_NUM_THREADS" not in done.stderr
