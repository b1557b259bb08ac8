"""An image read as a sequence by a GRU: each row of pixels is one step, the last state is classified.

Run from the repository root:  python examples/gru_classifier.py                  (digits, seconds)
                               python examples/gru_classifier.py --dataset fashion-mnist --epochs 2

``nn.GRU`` returns ``(output, state)``; the model classifies the last step's output. Direct feedback enters at
the GRU (its output tensor; the state passes through), so the GRU's weights get ``s @ B`` back-propagated through
time inside their own segment and the head its true gradient; forward gradients run through the GRU without
oneDNN; fa and the sign-symmetry methods feed back through the head's Linear and keep the GRU's exact backward
(``--exact-modules gru``: a recurrent layer has no rule of its own). ``model()`` is also the factory for
``beyondbp train --model examples/gru_classifier.py:model``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import beyondbp as bb
from beyondbp.data import load_dataset


class GRUClassifier(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 64):
        super().__init__()
        *_, rows, columns = input_shape
        self.gru = nn.GRU(columns * (input_shape[0] if len(input_shape) == 3 else 1), width, batch_first=True)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.permute(0, 2, 1, 3).flatten(2) if x.dim() == 4 else x  # [B, C, H, W] -> [B, H, C W]
        output, _ = self.gru(steps)
        return self.head(output[:, -1])


def model(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return GRUClassifier(input_shape, num_outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", default="bp,shallow,dfa,drtp,f3")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    objective = bb.make_objective("ce", data.task)
    for name in args.methods.split(","):
        torch.manual_seed(0)
        network = model(data.train.input_shape, data.train.num_outputs)
        trainer = bb.Trainer(network, bb.make_method(name), torch.optim.Adam(network.parameters(), lr=1e-3), objective,
                             progress=False)
        history = trainer.fit(data.train, epochs=args.epochs, eval_set=data.test, batch_size=50)
        print(f"{name:10s} test accuracy {history[-1]['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
