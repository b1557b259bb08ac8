"""Direct feedback: a signal projected by fixed random matrices to every hidden block.

One mechanism serves DFA (Nøkland 2016), DRTP (Frenkel et al. 2021), F³ (Flügel et al.
2023) and shallow learning; they differ only in the signal (see :mod:`.signals`).

For a model ``h_i = f_i(h_{i-1})``, ``i = 1..L``, hidden block ``i < L`` receives

    ∂L/∂h_i := s @ B_i            (B_i: C × n_i, fixed, n_i = h_i.numel() / batch)

and autograd inside the block turns it into weight gradients; the output block ``L``
gets its true local gradient ``∂L/∂θ_L``. No gradient crosses a block boundary: each
block's input is detached. The injected value is *not* divided by the batch size (F³
paper), unlike the mean-reduced loss at the output; ``batch_mean=True`` divides it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BeyondBPError, UnsupportedModelError
from ..objectives import Objective
from .base import Method, StepResult, model_device
from .feedback_init import FEEDBACK_INITS, feedback_matrix
from .signals import SIGNALS, DelayedBuffer, Signal


def blocks_of(model: nn.Module, method: str) -> list[nn.Module]:
    """The blocks of a sequence-of-blocks model, or an error naming what the model is."""
    if not isinstance(model, nn.Sequential) or len(model) == 0:
        raise UnsupportedModelError(
            f"{method} needs a model that is a sequence of blocks (a non-empty torch.nn.Sequential); "
            f"got {type(model).__name__}"
        )
    return list(model)


class DirectFeedback(Method):
    """Direct feedback of ``signal`` to every hidden block; ``signal=None`` freezes them (shallow).

    Args:
        signal: a name from :data:`~beyondbp.methods.signals.SIGNALS`, or None.
        feedback_init: initialisation of the ``B_i`` (see :mod:`.feedback_init`).
        normalize: divide ``B_i`` by ``sqrt(n_i)``.
        batch_mean: divide the injected gradient by the batch size.
        name: registry name of the preset (``dfa``, ``drtp``, ``f3``, ``shallow``).
    """

    def __init__(
        self,
        signal: str | None,
        feedback_init: str = "kaiming_uniform",
        normalize: bool = False,
        batch_mean: bool = False,
        name: str = "direct",
    ):
        FEEDBACK_INITS.get(feedback_init)
        self.signal: Signal | None = None if signal is None else SIGNALS.get(signal)
        self.feedback_init = feedback_init
        self.normalize = normalize
        self.batch_mean = batch_mean
        self.name = name
        self.feedback: list[Tensor] | None = None
        self.buffer: DelayedBuffer | None = None
        self.num_outputs: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.signal.name}" if self.name == "f3" else self.name

    def attach(self, model: nn.Module, num_outputs: int, num_samples: int | None = None,
               task: str = "classification") -> None:
        blocks_of(model, self.name)
        self.num_outputs = num_outputs
        self.feedback = None
        self.buffer = None
        if self.signal is None:
            return
        if self.signal.classification_only and task != "classification":
            raise BeyondBPError(f"signal '{self.signal.name}' needs a classification data set, got {task}")
        if self.signal.delayed:
            if num_samples is None:
                raise BeyondBPError(f"signal '{self.signal.name}' needs num_samples (the training set size)")
            self.buffer = DelayedBuffer(num_samples, num_outputs, model_device(model))

    def _feedback_for(self, hidden: list[Tensor]) -> list[Tensor]:
        """The matrices ``B_i``, drawn at the first step, when the blocks' output sizes are known."""
        if self.feedback is None:
            widths = [h[0].numel() for h in hidden]
            self.feedback = [
                feedback_matrix(self.feedback_init, self.num_outputs, n, self.normalize).to(h.device)
                for n, h in zip(widths, hidden)
            ]
        return self.feedback

    def step(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor, objective: Objective) -> StepResult:
        if self.num_outputs is None:
            raise RuntimeError(f"call {self.name}.attach(model, ...) before step()")
        *hidden_blocks, head = blocks_of(model, self.name)
        hidden, h = [], x
        with torch.set_grad_enabled(self.signal is not None):
            for block in hidden_blocks:
                h = block(h.detach())
                hidden.append(h)
        y = head(h.detach())
        loss = objective(y, t)
        tensors, grads = [loss], [None]
        if self.signal is not None and hidden:
            s = self.signal.compute(y.detach(), t, index, objective, self.buffer)
            if self.batch_mean:
                s = s / len(x)
            for h_i, b_i in zip(hidden, self._feedback_for(hidden)):
                if h_i.requires_grad:
                    tensors.append(h_i)
                    grads.append((s @ b_i).view_as(h_i))
        torch.autograd.backward(tensors, grads)
        return StepResult(y.detach(), loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {
            "feedback": self.feedback,
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.feedback = state["feedback"]
        if (state["buffer"] is None) != (self.buffer is None):
            raise ValueError(f"checkpoint and method '{self.label}' disagree on having a delayed buffer")
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
