"""Where direct feedback enters a class-token ViT and a pooled ResNet: points and positions (issue 35, item 6).

Part ``vit``: the ViT of ``examples/hf_vit.py`` (2 pre-norm blocks of width 32, class-token read-out) on digits,
15 epochs, Adam lr 1e-3, batch 50, seeds 1-3: BP, the head alone, and DFA, DRTP and F³ (delayed_error_softmax)
with points at the blocks' outputs or at the norms, their signal shared by every token or entering the
positions the read-out uses (the class token).
Part ``resnet``: ResNet-20 (batch norm) on 3,000 Fashion-MNIST training images, 4 epochs, the same optimiser,
seeds 1-2: DFA and DRTP with one feedback value per element of each block's feature map (C × the whole map)
or one C × channels matrix shared by every position (the read-out is a global average pool).
Run from the repository root (about 20 minutes on 2 idle cores; the committed CSV holds the ViT part and the
ResNet part's first two runs):

    python benchmarks/checks/dfa_read_out.py benchmarks/checks/dfa-read-out-2026-12-05.csv
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
from beyondbp.data.options import training_subset  # noqa: E402
from beyondbp.models.registry import MODELS  # noqa: E402

BLOCKS = ("vit.layers.0", "vit.layers.1")
DIRECT = ("dfa", "drtp", "f3:delayed_error_softmax")
VIT_RUNS = [("bp", {}), ("shallow", {})] + [
    (name, {"feedback_points": points, "token_feedback": tokens})
    for name in DIRECT for points in (BLOCKS, ("norms",)) for tokens in ("shared", "read-out")]
RESNET_RUNS = [(name, {"token_feedback": tokens}) for name in ("dfa", "drtp") for tokens in ("per-token", "read-out")]


def run(data, make_model, name: str, options: dict, seed: int, epochs: int) -> float:
    torch.manual_seed(seed)
    model = make_model(data.train.input_shape, data.train.num_outputs)
    method = bb.make_method(name, **options)
    trainer = bb.Trainer(model, method, torch.optim.Adam(model.parameters(), lr=1e-3),
                         bb.make_objective("ce", data.task), progress=False)
    return trainer.fit(data.train, epochs, data.test, batch_size=50, seed=seed)[-1]["test_accuracy"]


def main(out: str) -> None:
    digits = load_dataset("digits")
    fashion = training_subset(load_dataset("fashion-mnist"), 3000)
    resnet = MODELS.get("resnet20")
    parts = [("vit", digits, vit, VIT_RUNS, (1, 2, 3), 15), ("resnet", fashion, resnet, RESNET_RUNS, (1, 2), 4)]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["part", "method", "points", "token_feedback", "seed", "test_accuracy"])
        for part, data, make_model, runs, seeds, epochs in parts:
            for seed in seeds:
                for name, options in runs:
                    accuracy = run(data, make_model, name, options, seed, epochs)
                    points = ",".join(options.get("feedback_points", ())) or "default"
                    row = [part, name, points, options.get("token_feedback", "read-out"), seed, f"{accuracy:.4f}"]
                    writer.writerow(row)
                    f.flush()
                    print(*row, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
