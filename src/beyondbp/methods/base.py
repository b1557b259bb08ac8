"""The method API: a training method is a way to fill ``p.grad``.

A method attaches to a model once (creating whatever it needs: feedback matrices,
per-sample buffers), then for each batch computes the outputs and the loss and writes
``.grad`` on the trainable parameters, accumulating like ``loss.backward()`` does. Any
``torch.optim`` optimizer then takes the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

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

    Subclasses implement :meth:`step`; those that keep state (feedback matrices,
    buffers) also override :meth:`attach`, :meth:`state_dict` and
    :meth:`load_state_dict`, so that checkpoints carry it.
    """

    #: Registry name, e.g. ``"f3"``.
    name: str = "method"

    #: Set by the trainer in data-parallel training (:mod:`beyondbp.distributed`), else None.
    parallel: DataParallel | None = None

    @property
    def exchanges_estimates(self) -> bool:
        """True when :meth:`step` has already combined the ranks' estimates (and the mean loss)
        itself, so that the trainer must not average ``.grad`` over the ranks again."""
        return False

    def attach(
        self,
        model: nn.Module,
        num_outputs: int,
        num_samples: int | None = None,
        task: str = "classification",
    ) -> None:
        """Prepare to train ``model`` with ``num_outputs`` outputs on ``num_samples`` samples."""

    def step(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor, objective: Objective) -> StepResult:
        """Forward ``x``, compute the loss against targets ``t`` and fill ``p.grad``.

        ``index`` holds the batch's sample indices in the training set (F³ addresses its
        per-sample buffer with them).
        """
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
