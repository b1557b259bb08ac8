"""A classifier built from torch.nn.TransformerEncoder (batch first), trained with dfa and f3.

Run from the repository root:  python examples/transformer_encoder.py           (digits, a few seconds)
                               python examples/transformer_encoder.py fashion-mnist --epochs 2

The image is cut into patches, each embedded by one linear map, plus a learned position
embedding; two encoder layers; the mean over tokens; a linear output layer. The signal enters
at the output of each encoder layer (``feedback_points=["encoder.layers.0",
"encoder.layers.1"]``): every token position receives ``s @ B_i / tokens`` (the shared token
feedback), which each layer back-propagates through its attention and MLP; the patch and
position embeddings belong to the first layer's segment. ``model()`` is also the factory for
``beyondbp train --model examples/transformer_encoder.py:model --feedback-points
encoder.layers.0,encoder.layers.1``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import beyondbp as bb
from beyondbp.data import WithIndex, load_dataset

FEEDBACK_POINTS = ["encoder.layers.0", "encoder.layers.1"]


class EncoderClassifier(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, patch: int, width: int = 64,
                 layers: int = 2, heads: int = 4):
        super().__init__()
        channels, height, side = input_shape
        self.patch = patch
        tokens = (height // patch) * (side // patch)
        self.embed = nn.Linear(channels * patch * patch, width)
        self.position = nn.Embedding(tokens, width)  # learned position embeddings, one row per token
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, num_outputs)

    def forward(self, x):
        p = self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p)  # [batch, channels, rows, cols, p, p]
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # [batch, tokens, channels*p*p]
        positions = torch.arange(patches.shape[1], device=x.device)
        h = self.encoder(self.embed(patches) + self.position(positions))
        return self.out(self.norm(h).mean(dim=1))


def model(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """The factory beyondbp calls: images ``(channels, height, width)`` in, logits out (patches of a quarter side)."""
    return EncoderClassifier(input_shape, num_outputs, patch=max(1, input_shape[1] // 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="digits", help="digits (default) or fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    train = DataLoader(WithIndex(TensorDataset(data.train.x, data.train.t.argmax(1))), batch_size=50, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    test = DataLoader(TensorDataset(data.test.x, data.test.t.argmax(1)), batch_size=500)
    objective = bb.make_objective("ce", "classification")
    for name in ("bp", "dfa", "f3:delayed_error_softmax"):
        torch.manual_seed(0)
        network = model(data.train.input_shape, data.train.num_outputs)
        method = bb.make_method(name) if name == "bp" else bb.make_method(name, feedback_points=FEEDBACK_POINTS)
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        history = bb.Trainer(network, method, optimizer, objective).fit(train, args.epochs, eval_set=test)
        print(f"{method.label:28s} test accuracy {history[-1]['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
