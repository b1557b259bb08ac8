"""Text from a trained language model: sampling one token at a time (task ``lm``).

Each step feeds the last ``context`` tokens (the length the model was trained on), turns the logits at the last
position into a distribution (divided by ``temperature``; only the ``top_k`` largest kept when given) and draws
the next token from a seeded generator, so a seed gives the same text.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .build import restore_run
from .errors import BeyondBPError
from .models.outputs import ensure_output


@torch.no_grad()
def sample(model: nn.Module, prompt: list[int], tokens: int, context: int, temperature: float = 1.0,
           top_k: int = 0, seed: int = 0, device: torch.device | str = "cpu") -> list[int]:
    """``tokens`` new token ids after ``prompt`` (ids), from a model returning logits ``[batch, T, vocabulary]``."""
    if temperature <= 0:
        raise BeyondBPError(f"temperature must be above 0, got {temperature}")
    if tokens < 0 or top_k < 0:
        raise BeyondBPError(f"tokens and top_k must be at least 0, got {tokens} and {top_k}")
    if not prompt:
        raise BeyondBPError("the prompt must hold at least one token")
    was_training = model.training
    ensure_output(model).eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = list(prompt)
    for _ in range(tokens):
        x = torch.tensor([ids[-context:]], device=device)
        logits = model(x)[0, -1].float().cpu() / temperature
        if top_k:
            cut = torch.topk(logits, min(top_k, len(logits))).values[-1]
            logits = logits.masked_fill(logits < cut, float("-inf"))
        ids.append(int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)))
    model.train(was_training)
    return ids[len(prompt):]


def sample_run(run_dir: Path | str, prompt: str = "\n", tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
               seed: int = 0, data_dir: str | None = None, device: str = "auto") -> str:
    """The prompt and ``tokens`` tokens sampled from the checkpoint of a ``beyondbp train`` run on a corpus."""
    _, _, data, model, _, _ = restore_run(run_dir, data_dir, device)
    if data.task != "lm" or data.vocabulary is None:
        raise BeyondBPError(f"{run_dir} trained on {data.name} (task {data.task}); sampling needs a run on a text "
                            f"corpus (task lm)")
    ids = sample(model, data.vocabulary.encode(prompt).tolist(), tokens, data.train.tokens, temperature, top_k, seed,
                 next(model.parameters()).device)
    return prompt + data.vocabulary.decode(ids)
