"""Direct feedback at the blocks' outputs against the rule ``norms`` on a pre-norm Hugging Face ViT.

The ViT of ``examples/hf_vit.py`` (2 pre-norm blocks of width 32, CLS read-out) on digits, 15 epochs, Adam lr 1e-3,
batch 50, seeds 1-3: test accuracy of BP, the head alone, and DFA, DRTP and F³ (delayed_error_softmax) with their
default points (the two blocks) and with the points rule ``norms`` (both layer norms of each block and the final
one). Run from the repository root:

    python benchmarks/checks/norm_points.py benchmarks/checks/norm-points-2026-12-05.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from hf_vit import vit  # noqa: E402

import beyondbp as bb  # noqa: E402
from beyondbp.data import load_dataset  # noqa: E402

RUNS = [("bp", ()), ("shallow", ()), ("dfa", ()), ("dfa", ("norms",)), ("drtp", ()), ("drtp", ("norms",)),
        ("f3:delayed_error_softmax", ()), ("f3:delayed_error_softmax", ("norms",))]


def main(out: str) -> None:
    data = load_dataset("digits")
    objective = bb.make_objective("ce", data.task)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "points", "seed", "test_accuracy"])
        for seed in (1, 2, 3):
            for name, points in RUNS:
                torch.manual_seed(seed)
                model = vit(data.train.input_shape, data.train.num_outputs)
                method = bb.make_method(name, **({"feedback_points": points} if points else {}))
                trainer = bb.Trainer(model, method, torch.optim.Adam(model.parameters(), lr=1e-3), objective,
                                     progress=False)
                accuracy = trainer.fit(data.train, 15, data.test, batch_size=50, seed=seed)[-1]["test_accuracy"]
                writer.writerow([name, ",".join(points) or "blocks", seed, f"{accuracy:.4f}"])
                f.flush()
                print(name, points or "blocks", seed, f"{accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
