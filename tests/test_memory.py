"""The peak memory of a computation (``beyondbp.memory``) and each run's ``step_memory_mb``."""

from __future__ import annotations

import torch

from beyondbp import RunConfig, run
from beyondbp.memory import peak_bytes


def test_the_peak_counts_what_the_computation_holds_at_once_and_not_what_existed_before():
    existing = torch.ones(1_000_000)

    def compute():
        a = torch.empty(2_000_000)  # 8 MB
        b = torch.empty(500_000)  # 2 MB, both alive: 10 MB
        del a, b
        c = torch.empty(1_000_000)  # 4 MB after the others are freed
        return c.numel() + existing.numel()

    result, peak = peak_bytes(compute, torch.device("cpu"))
    assert result == 2_000_000
    assert 10_000_000 <= peak < 10_100_000


def test_forward_execution_needs_a_fraction_of_backprops_step_memory(tmp_path):
    """8 blocks of width 64 on one batch of 1,437 digits: backprop keeps every block's activations until its
    backward pass (measured 3.6 MB), F³ and DRTP with forward execution one block's at a time (1.2-1.3 MB)."""
    common = dict(dataset="digits", hidden=(64,) * 8, loss="ce", epochs=1, batch_size=2000)
    memory = {method: run(RunConfig(method=method, **common, **extra), tmp_path / method,
                          progress=False)["step_memory_mb"]
              for method, extra in (("bp", {}), ("f3", {"execution": "forward"}), ("drtp", {"execution": "forward"}))}
    activations = 1437 * 64 * 4 / 2 ** 20  # one block's output, in MB
    assert memory["bp"] > 8 * activations
    assert memory["f3"] < 0.5 * memory["bp"] and memory["drtp"] < 0.5 * memory["bp"]
