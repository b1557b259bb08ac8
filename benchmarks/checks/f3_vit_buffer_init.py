"""One-off check behind NOTES.md's transformer section: does F³ on the `transformer` suite's ViT
improve when its first epoch does not feed back the targets (which is DRTP, and collapses this ViT)?

The delayed buffer's rows not yet written are read as the targets ``t`` (the F³ paper's
initialisation, the library's only behaviour), as zeros, or as ``t - 1/C`` (the softmax error
of a uniform prediction). Everything else is the suite's setting for seed 1 at lr 1e-3.

    .venv/bin/python benchmarks/checks/f3_vit_buffer_init.py zeros      # and: uniform, targets

Measured 2026-11-24 on this machine (2 cores), test accuracy after 3 epochs:
targets 0.1186 (the suite's run), zeros 0.2757, uniform 0.3093; DFA in the suite: 0.6408.
"""

import sys

import torch

from beyondbp.experiment import RunConfig, run
from beyondbp.methods import signals

FILLS = {"targets": lambda t: t, "zeros": torch.zeros_like, "uniform": lambda t: t - 1.0 / t.shape[1]}


def read_with(fill):
    def read(buffer, index, t):
        return torch.where(buffer.written[index, None], buffer.values[index], fill(t))
    return read


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "uniform"
    if mode not in FILLS:
        sys.exit(f"unknown fill '{mode}'; known: {', '.join(FILLS)}")
    signals.DelayedBuffer.read = read_with(FILLS[mode])
    config = RunConfig(method="f3:delayed_error_softmax", feedback_init="trinomial", dataset="fashion-mnist",
                       model="vit", depth=2, width=128, heads=4, mlp=128, patch=7, activation="tanh", loss="ce",
                       epochs=3, batch_size=100, lr=1e-3, seed=1)
    summary = run(config, out_dir=None, progress=True)
    print(f"{mode}: test accuracy {summary['test_accuracy']:.4f}")
