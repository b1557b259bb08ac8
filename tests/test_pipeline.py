"""Layer-parallel stages: the cut, the exactness against the single-process unlocked run, refusals, a dying
stage, and the benchmark's table."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from beyondbp.bench.pipeline import run_pipeline_bench
from beyondbp.checkpoint import load_checkpoint
from beyondbp.cli import main
from beyondbp.errors import BeyondBPError
from beyondbp.experiment import RunConfig, run
from beyondbp.pipeline import contiguous_split


def test_the_cut_minimises_the_largest_stage():
    assert contiguous_split([1, 1, 1, 1], 2) == [range(0, 2), range(2, 4)]
    assert contiguous_split([4, 1, 1, 1, 1], 2) == [range(0, 1), range(1, 5)]
    assert contiguous_split([1, 2, 3, 4, 5], 3) == [range(0, 3), range(3, 4), range(4, 5)]  # 6, 4, 5
    with pytest.raises(BeyondBPError, match="at most 2 stages"):
        contiguous_split([1, 1], 3)


@pytest.mark.parametrize("config,message", [
    (RunConfig(method="dfa", stages=2), "dfa knows its error only after the forward pass"),
    (RunConfig(method="bp", stages=2), "bp knows its error only after the forward pass"),
    (RunConfig(method="f3", stages=2, nproc=2), "cannot be combined with data parallelism"),
    (RunConfig(method="f3", stages=2, lowrank="oialr"), "cannot be combined with low-rank training"),
    (RunConfig(method="f3", stages=0), "stages must be at least 1"),
    (RunConfig(method="f3", stages=2, buffer_init="class_mean"), "with buffer_init class_mean reads the class means"),
    (RunConfig(method="f3:class_error_softmax", stages=2), "f3:class_error_softmax reads the class means"),
])
def test_what_stages_cannot_run_is_refused(config, message):
    with pytest.raises(BeyondBPError, match=message):
        config.validate()


def test_refusals_come_before_any_process_starts(tmp_path, capsys):
    with pytest.raises(BeyondBPError, match="cannot cut 3 blocks into 5 stages"):
        run(RunConfig(method="drtp", hidden=(16, 16), stages=5), tmp_path / "a")
    factory = tmp_path / "net.py"
    factory.write_text("import math\nfrom torch import nn\n\n"
                       "class Net(nn.Module):\n"
                       "    def __init__(self, n, c):\n"
                       "        super().__init__()\n"
                       "        self.hidden, self.out = nn.Linear(n, 16), nn.Linear(16, c)\n\n"
                       "    def forward(self, x):\n"
                       "        return self.out(self.hidden(x.flatten(1)).tanh())\n\n"
                       "def net(shape, c):\n"
                       "    return Net(math.prod(shape), c)\n")
    with pytest.raises(BeyondBPError, match="nn.Sequential cut at its children"):
        run(RunConfig(method="drtp", model=f"{factory}:net", stages=2), tmp_path / "b")
    assert main(["train", "--method", "dfa", "--stages", "2", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages need a signal known before the forward pass" in err


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "checkpoint.pt", "cpu")["model"]


@pytest.mark.slow
@pytest.mark.parametrize("method,options", [
    ("f3", {}), ("drtp", {}),
    ("f3", {"center_signal": True, "feedback_exclude": ("bias",), "hidden_lr_scale": 0.5, "signal_decay": 0.7}),
])
def test_two_stages_equal_the_single_process_unlocked_run_bit_for_bit(tmp_path, method, options):
    """One epoch on 2 stages, resumed for two more (one epoch boundary by resume, one inside the running
    pipeline, where F³'s buffer must reach stage 0), against 3 epochs in one process, one thread."""
    common = dict(method=method, dataset="digits", hidden=(32, 32, 32), batch_size=50, seed=3, lr=1e-2, **options)
    run(RunConfig(**common, epochs=1, stages=2), tmp_path / "stages", progress=False)
    staged = run(RunConfig(**common, epochs=3, stages=2), tmp_path / "stages", resume=True, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run(RunConfig(**common, epochs=3, unlocked=True), tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = weights(tmp_path / "stages"), weights(tmp_path / "single")
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert staged["test_accuracy"] == single["test_accuracy"] > 0.8
    assert [s["blocks"] for s in staged["stages"]] == ["0-0", "1-3"]  # 2080 parameters, then 2442
    assert staged["stages"][0]["bytes_sent_per_sample"] == 32 * 4  # one activation row of width 32
    history = [json.loads(line) for line in (tmp_path / "stages" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def stage_processes(out: Path) -> dict[int, int]:
    """``{rank: pid}`` of the stage processes of the run writing to ``out``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = dict(v.split(b"=", 1) for v in (entry / "environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if b"beyondbp.worker" in command and str(out).encode() in command and b"RANK" in environment:
            found[int(environment[b"RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
def test_a_dying_stage_stops_the_run_with_a_message(tmp_path):
    command = [sys.executable, "-m", "beyondbp", "train", "--method", "drtp", "--hidden", "64,64",
               "--epochs", "1000", "--stages", "2", "--no-progress", "--out", str(tmp_path)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "checkpoint.pt").is_file():
            assert launcher.poll() is None and time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.2)
        os.kill(stage_processes(tmp_path)[1], signal.SIGKILL)
        killed = time.monotonic()
        _, err = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert time.monotonic() - killed < 75
    assert launcher.returncode != 0 and re.search("failed|died", err.splitlines()[-1])
    assert (tmp_path / "checkpoint.pt").is_file()  # the last good checkpoint stays


@pytest.mark.slow
def test_the_pipeline_benchmark_reports_every_configuration(tmp_path):
    rows = run_pipeline_bench(tmp_path, depth=2, width=16, batch_size=32, stages=2, microbatches=4, samples=128,
                              rounds=1, runs=tmp_path / "runs")
    assert [(r["method"], r["processes"]) for r in rows] == [("bp", 1), ("f3", 1), ("f3", 2), ("drtp", 2), ("bp", 2)]
    assert all(float(r["samples_per_second"]) > 0 for r in rows)
    assert rows[4]["bytes_sent_per_sample"] == "64 / 64"  # 16 activations forward, 16 gradients back
    assert rows[2]["bytes_sent_per_sample"].startswith("64 / ")  # activations; the buffer from the last stage
    gpipe = json.loads((tmp_path / "runs" / "bp-gpipe" / "gpipe.json").read_text())
    assert gpipe["train_loss"] < 2.0
    text = (tmp_path / "pipeline.md").read_text()
    assert "F³ on 2 stages" in text and "| drtp | 2 stages |" in text and (tmp_path / "pipeline.png").is_file()


def test_with_several_rounds_the_report_takes_each_configurations_median_round_and_lists_every_one():
    from beyondbp.bench.pipeline import _row, pipeline_markdown

    def measured(*speeds: float) -> list[dict]:
        return [{"samples_per_second": v, "threads": 1,
                 "stages": [{"peak_memory_mb": v, "bytes_sent_per_sample": 64, "idle_fraction": 0.5}]} for v in speeds]

    plan = [("bp", "1 process", (100, 300, 200)), ("f3", "2 stages", (150, 90, 120)), ("bp", "2 stages", (50, 70, 60))]
    rows = [_row(method, how, measured(*speeds)) for method, how, speeds in plan]
    assert [r["samples_per_second"] for r in rows] == [200, 120, 60]  # the median round
    assert rows[0]["rounds"] == "100 / 300 / 200" and rows[1]["peak_memory_mb"] == "120"  # the median round's
    meta = {"samples": 128, "depth": 2, "width": 16, "batch_size": 32, "lr": 1e-4, "machine": "m", "torch": "t",
            "finished": "f", "command": "c", "stages": 2, "rounds": 3, "epochs": 3}
    text = pipeline_markdown(rows, meta)
    assert "ran 3 times in turn" in text and "| 100 / 300 / 200 |" in text
    assert "in each round against that round's backprop: 1.50×, 0.30×, 0.60×" in text
    assert "F³ on 2 stages: 0.60× backprop in one process" in text and "2.00× backprop on the same stages" in text


