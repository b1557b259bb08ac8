"""Hugging Face text models (BERT, GPT-2), built from their configurations, trained as they are on token ids.

Run from the repository root:  python examples/hf_text.py --model bert          (a minute per method and epoch)
                               python examples/hf_text.py --model gpt2 --methods bp,dfa,fa --epochs 6

The data set ``python-modules`` is on every machine with Python: which of ten standard-library modules a
64-byte snippet of source comes from, the bytes as token ids (vocabulary 256). ``BertForSequenceClassification``
and ``GPT2ForSequenceClassification`` return a ``SequenceClassifierOutput``, trained on its ``logits``. The
direct methods' points are the encoder's blocks (BERT's ``bert.encoder.layer.N``, GPT-2's ``transformer.h.N``),
found by rule; fa keeps the exact backward of the embeddings and layer norms and feeds back through every
Linear and GPT-2's ``Conv1D``. Both models learn slowly from scratch at this size (bp reaches about 0.3 after
six epochs): a starting point for measuring, not a result. GPT-2's language-model head shares its weight with
the token embedding; as a classifier the head is a separate ``score`` layer.
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

import beyondbp as bb
from beyondbp.data import load_dataset


def text_model(kind: str, tokens: int, num_outputs: int) -> torch.nn.Module:
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(
            vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=tokens, num_labels=num_outputs, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0))
    # byte 0 never occurs in source text: it serves as GPT-2's padding id, which it needs to find the last token
    return GPT2ForSequenceClassification(GPT2Config(
        vocab_size=256, n_positions=tokens, n_embd=64, n_layer=2, n_head=2, num_labels=num_outputs,
        pad_token_id=0, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("bert", "gpt2"), default="bert")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--methods", default="bp,shallow,dfa,fa")
    args = parser.parse_args()
    data = load_dataset("python-modules")
    objective = bb.make_objective("ce", data.task)
    for name in args.methods.split(","):
        torch.manual_seed(0)
        model = text_model(args.model, data.train.input_shape[0], data.train.num_outputs)
        method = bb.make_method(name)
        trainer = bb.Trainer(model, method, torch.optim.Adam(model.parameters(), lr=1e-3), objective,
                             progress=False)
        history = trainer.fit(data.train, epochs=args.epochs, eval_set=data.test, batch_size=50)
        print(f"{args.model} {method.label:10s} test accuracy {history[-1]['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
