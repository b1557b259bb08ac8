"""bench speed: the output files, and the memory claim of forward execution (allocation counts, not timings)."""

from __future__ import annotations

import csv
import json

import torch

from beyondbp.bench.speed import SPEED_COLUMNS, Setup, run_speed
from beyondbp.methods import make_method


def test_speed_files(tmp_path):
    rows = run_speed(["bp", "f3", "dfa"], depth=2, width=32, batch_size=16, out_dir=tmp_path, steps=2, warmup=1)
    table = list(csv.DictReader(open(tmp_path / "speed.csv")))
    assert tuple(table[0]) == SPEED_COLUMNS
    assert [r["method"] for r in table] == ["bp", "f3:delayed_error_one_hot", "dfa"]
    assert float(table[0]["step_time_ratio"]) == 1.0 and float(table[0]["step_memory_ratio"]) == 1.0
    assert all(float(r["step_time_ms"]) > 0 and float(r["step_memory_mb"]) >= 0 for r in table)
    assert float(table[0]["step_energy_ratio"]) == 1.0 and all(float(r["step_energy_mj"]) > 0 for r in table)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["depth"] == 2 and meta["command"].startswith("beyondbp bench speed") and meta["energy_source"]
    assert len(rows) == 3


def step_memory(spec: str, **options) -> int:
    setup = Setup(spec, "mlp", depth=8, width=64, batch_size=512, device=torch.device("cpu"))
    setup.method = make_method(spec, **options)
    setup.method.attach(setup.model, num_outputs=10, num_samples=512)
    setup.method_step()  # draw the feedback matrices outside the measurement
    return setup.step_memory()


def test_forward_execution_keeps_one_block_alive():
    """8 hidden blocks: backprop keeps every block's activations until the backward pass; F³ executed
    block by block keeps a block's input, its output and the injected gradient (three
    activation-sized tensors, plus small temporaries) whatever the depth."""
    bp = step_memory("bp")
    forward = step_memory("f3", execution="forward")
    autograd = step_memory("f3", execution="autograd")
    activation = 512 * 64 * 4
    assert bp >= 8 * activation
    assert forward <= 3.5 * activation
    assert forward < 0.4 * bp and autograd > 2.5 * forward


def test_dfa_memory_is_like_backprop():
    assert step_memory("dfa") < 1.25 * step_memory("bp")
