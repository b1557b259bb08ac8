"""A Hugging Face ViT, built from its configuration (no download), trained as it is by several methods.

Run from the repository root:  python examples/hf_vit.py                      (digits, under a minute)
                               python examples/hf_vit.py --dataset fashion-mnist --epochs 3

``ViTForImageClassification`` returns an ``ImageClassifierOutput``; beyondbp trains on its ``logits``. The
direct methods put their feedback points at the encoder's blocks (``vit.layers.N``, found by rule: the
model's stack of blocks); fa keeps the exact backward of the embeddings (class token, positions: added, not
multiplied) and feeds back through every Linear and the patch convolution; fg runs its forward-mode pass on
the math path of attention. The same model from the command line:

    beyondbp train --method dfa --model hf:ViTForImageClassification \\
        --hf-config hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4
"""

from __future__ import annotations

import argparse

import torch
from transformers import ViTConfig, ViTForImageClassification

import beyondbp as bb
from beyondbp.data import load_dataset


def vit(input_shape: tuple[int, ...], num_outputs: int) -> ViTForImageClassification:
    channels, side, _ = input_shape
    config = ViTConfig(image_size=side, patch_size=side // 2 if side % 4 else side // 4, num_channels=channels,
                       hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_labels=num_outputs, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", default="bp,shallow,dfa,drtp,fa,fg:k4")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    objective = bb.make_objective("ce", data.task)
    for name in args.methods.split(","):
        torch.manual_seed(0)
        model = vit(data.train.input_shape, data.train.num_outputs)
        method = bb.make_method(name)
        trainer = bb.Trainer(model, method, torch.optim.Adam(model.parameters(), lr=1e-3), objective,
                             progress=False)
        history = trainer.fit(data.train, epochs=args.epochs, eval_set=data.test, batch_size=50)
        points = getattr(getattr(method, "points", None), "names", None)
        print(f"{method.label:14s} test accuracy {history[-1]['test_accuracy']:.4f}"
              + (f"  (feedback points {', '.join(points)})" if points else ""))


if __name__ == "__main__":
    main()
