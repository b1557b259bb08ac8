"""The method API: a training method is a way to fill ``p.grad``.

A method attaches to a model once (creating whatever it needs: feedback matrices,
per-sample buffers), then for each batch computes the outputs and the loss and writes
``.grad`` on the trainable parameters, accumulating like ``loss.backward()`` does. Any
``torch.optim`` optimizer then takes the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import BeyondBPError
from ..models.outputs import ensure_output
from ..objectives import Objective

if TYPE_CHECKING:
    from ..distributed import DataParallel


@dataclass
class StepResult:
    """What one step computed: the model output for the batch and the (mean) loss."""

    output: Tensor
    loss: Tensor


class Method:
    """Base class of gradient estimators.

    :meth:`attach` records what every method needs (outputs, samples, task) and calls
    :meth:`prepare` for the method's own state; :meth:`step` checks the batch (attached
    first, targets as class indices or ``[batch, C]`` values, sample indices where needed)
    and calls :meth:`compute`, which subclasses implement. Those that keep state (feedback
    matrices, buffers) also override :meth:`state_dict` and :meth:`load_state_dict`, so that
    checkpoints carry it.
    """

    #: Registry name, e.g. ``"f3"``.
    name: str = "method"

    #: Set by the trainer in data-parallel training (:mod:`beyondbp.distributed`), else None.
    parallel: DataParallel | None = None

    #: Whether :meth:`step` needs each sample's index in the training set (F³'s buffer).
    needs_index: bool = False

    #: Set by :meth:`attach`.
    num_outputs: int | None = None
    num_samples: int | None = None
    task: str = "classification"
    #: Tokens per sample for next-token prediction (task ``lm``: outputs ``[batch, tokens, C]``), else None.
    tokens: int | None = None

    #: Whether :meth:`step` may run under ``torch.autocast`` (bf16 precision).
    supports_autocast = True
    #: Whether every gradient :meth:`step` fills comes from ``(loss_scale · loss).backward()`` (fp16 precision:
    #: the trainer's dynamic loss scaling divides ``loss_scale`` out again before the optimizer step).
    supports_loss_scaling = False
    #: Whether :meth:`step` may run on a ``torch.compile``'d model (no hooks, no products of its own).
    supports_compile = False
    loss_scale: float | Tensor = 1.0

    @property
    def exchanges_own_estimates(self) -> bool:
        """Whether, in data-parallel training, :meth:`step` combines the ranks' estimates (and the mean
        loss) itself instead of leaving ``.grad`` to be averaged (fg with weight tangents)."""
        return False

    @property
    def exchanges_estimates(self) -> bool:
        """True when this step has already combined the ranks' estimates: the trainer must not average again."""
        return self.parallel is not None and self.exchanges_own_estimates

    def connect(self, parallel: DataParallel | None = None,
                step_segment: Callable[[list[nn.Parameter]], None] | None = None) -> None:
        """What a training loop offers the method after :meth:`attach`: the data-parallel reductions, and a
        function that steps the optimizer on a list of parameters (for methods that update segments as
        the forward pass reaches them). Each method takes what it needs and refuses what it cannot use."""
        self.parallel = parallel

    def attach(
        self,
        model: nn.Module,
        num_outputs: int,
        num_samples: int | None = None,
        task: str = "classification",
        tokens: int | None = None,
    ) -> None:
        """Prepare to train ``model`` with ``num_outputs`` outputs on ``num_samples`` samples (of ``tokens``
        tokens each, with a class per token, for task ``lm``). A model whose
        output is an object (a Hugging Face ``ModelOutput``, a dict, a tuple) is trained on the tensor that
        :mod:`beyondbp.models.outputs` chooses (``logits``, else the first).

        Attaching again starts from fresh state (new feedback matrices, an empty buffer).
        """
        if num_outputs < 1:
            raise BeyondBPError(f"{self.name}: num_outputs must be at least 1, got {num_outputs}")
        if (task == "lm") != (tokens is not None):
            raise BeyondBPError(f"{self.name}: give tokens (per sample) exactly for task 'lm', got task {task} and "
                                f"tokens {tokens}")
        self.num_outputs, self.num_samples, self.task, self.tokens = num_outputs, num_samples, task, tokens
        self.prepare(ensure_output(model))

    def prepare(self, model: nn.Module) -> None:
        """Create the method's state for ``model`` (after :attr:`num_outputs` and the rest are set)."""

    def step(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor | None,
             objective: Objective) -> StepResult:
        """Forward ``x``, compute the loss against targets ``t`` and fill ``p.grad``.

        ``t`` holds class indices (``[batch]``, integers; ``[batch, T]`` per token) or target values
        (``[batch, C]``).
        ``index`` holds the batch's sample indices in the training set (F³ addresses its
        per-sample buffer with them; other methods accept None).
        """
        if self.num_outputs is None:
            raise BeyondBPError(f"call {self.name}.attach(model, num_outputs, ...) before step()")
        if index is None and self.needs_index:
            raise BeyondBPError(f"{self.label} needs each sample's index in the training set: give batches "
                                f"(x, t, index), e.g. from a dataset wrapped in beyondbp.data.WithIndex(dataset)")
        if self.needs_index and self.num_samples is not None:
            outside = index[(index < 0) | (index >= self.num_samples)]
            if len(outside):
                raise BeyondBPError(f"{self.label}: sample index {int(outside[0])} is outside the training set of "
                                    f"{self.num_samples} samples given to attach()")
        return self.compute(model, x, objective.targets(t, self.num_outputs), index, objective)

    def compute(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor | None,
                objective: Objective) -> StepResult:
        """:meth:`step` after its checks; ``t`` is ``[batch, C]`` (``[batch, T, C]`` per token)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """Name with variant, as shown in tables: ``"f3:delayed_error"``."""
        return self.name

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method '{self.name}' keeps no state, got keys {sorted(state)}")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
