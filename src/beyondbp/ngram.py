"""The floors a language model must beat: unigram and bigram models counted on the training part.

Each is evaluated like a network (cross-entropy per test target token, nats): the unigram model predicts every
token with its frequency in the training targets, the bigram model with its frequency after the token before it
(the input at that position), both with add-one (Laplace) smoothing so that no test token has probability zero.
"""

from __future__ import annotations

import torch

from .data import DataSplit
from .objectives import IGNORE_INDEX


def ngram_losses(data: DataSplit) -> dict[str, float]:
    """``{"unigram": nats, "bigram": nats, "train_tokens": n}`` of a corpus split (task lm)."""
    vocabulary = data.train.num_outputs
    kept = data.train.t != IGNORE_INDEX
    previous, following = data.train.x[kept].long(), data.train.t[kept].long()
    unigram = torch.bincount(following, minlength=vocabulary).double() + 1
    pairs = torch.bincount(previous * vocabulary + following, minlength=vocabulary ** 2).double().view(
        vocabulary, vocabulary) + 1
    test_kept = data.test.t != IGNORE_INDEX
    test_previous, test_following = data.test.x[test_kept].long(), data.test.t[test_kept].long()
    unigram_loss = -(unigram / unigram.sum()).log()[test_following].mean()
    bigram_loss = -(pairs / pairs.sum(dim=1, keepdim=True)).log()[test_previous, test_following].mean()
    return {"unigram": unigram_loss.item(), "bigram": bigram_loss.item(), "train_tokens": int(kept.sum())}
