"""The extension point for schedules that change a model's parametrisation during training.

OIALR (:mod:`beyondbp.lowrank`) and AB-training (:mod:`beyondbp.ab_training`) replace layers by
factored ones while the model trains. The :class:`~beyondbp.train.Trainer` drives any such
schedule through this interface and nothing else: it asks it to accept the method
(:meth:`ParametrizationSchedule.check_method`), calls :meth:`after_step` after every optimizer
step and :meth:`end_epoch` after every epoch, lets it combine the ranks' gradients when it
trains parts of the model in separate groups (:meth:`average_gradients`), logs its
:meth:`report`, and saves and restores it with the checkpoint. A new schedule subclasses
this class and overrides what it changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import BeyondBPError
from .options import setting


class ParametrizationSchedule:
    """Base class; every hook does nothing until a subclass says otherwise."""

    #: The key of its events in ``metrics.jsonl`` (``"oialr"``, ``"ab"``).
    name: str = "schedule"

    @classmethod
    def check_method(cls, method: Any) -> None:
        """Refuse a method that cannot train the factored layers (layer-wise feedback has no feedback path
        for them yet)."""
        from .methods.layerwise import LayerwiseFeedback

        if isinstance(method, LayerwiseFeedback):
            raise BeyondBPError(f"{setting('lowrank', cls.name)} composes with bp, shallow, dfa, drtp, f3 and fg; "
                                f"layer-wise feedback ({method.label}) has no feedback path for factored layers yet")

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Called after every optimizer step; returns an event to log when it changed the model."""
        return None

    def end_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Called after every epoch, before evaluation and the checkpoint."""
        return None

    def average_gradients(self, model: nn.Module, loss: float, local_count: int) -> float | None:
        """Combine the ranks' gradients itself and return the mean loss, or None to leave it to plain data
        parallelism (or to a method that exchanges its own estimates)."""
        return None

    def report(self, model: nn.Module) -> dict[str, Any]:
        """What each epoch's record shows of the parametrisation (ranks, trainable fraction, ...)."""
        return {}

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {}

    def prepare_to_load(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Give ``model`` the shapes of the checkpoint's parametrisation before its weights are loaded."""
