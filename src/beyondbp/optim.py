"""The training section of a run's configuration: epochs, batches, the loss and the optimizer.

The recipe is the optimizer's business, not the method's: whatever a method writes into ``p.grad``, the
optimizer built here takes the step, with its learning rate, momentum and weight decay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import BeyondBPError
from .objectives import OBJECTIVES
from .options import Section, option, setting
from .registry import Registry

GROUP = "training"
PRECISIONS = ("fp32", "bf16", "fp16")

#: ``(parameter groups, lr, momentum, weight_decay) -> optimizer``
OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam", "Adam (Kingma & Ba 2015); --weight-decay adds L2 to the gradient")(
    lambda params, lr, momentum, weight_decay: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
)
OPTIMIZERS.register("adamw", "AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019)")(
    lambda params, lr, momentum, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
)
OPTIMIZERS.register("sgd", "SGD with momentum (--momentum); --weight-decay adds L2 to the gradient")(
    lambda params, lr, momentum, weight_decay: torch.optim.SGD(params, lr=lr, momentum=momentum,
                                                               weight_decay=weight_decay)
)


@dataclass
class TrainingOptions(Section):
    """How long a run trains, on what batches, with which loss and optimizer."""

    epochs: int = option(10, GROUP, "epochs")
    batch_size: int = option(50, GROUP, "batch size (per process)")
    seed: int = option(0, GROUP, "seed", flag=False)
    loss: str | None = option(None, GROUP, "bce (sigmoid output), ce or mse; default bce for classification, ce "
                                           "for lm, mse for regression")
    label_smoothing: float = option(0.0, GROUP, "ce: the loss against (1 - e) t + e / C instead of the one-hot target "
                                                "t (Szegedy et al. 2016); direct feedback's signals keep t")
    optimizer: str = option("adam", GROUP, "adam, adamw or sgd")
    lr: float = option(1e-3, GROUP, "learning rate")
    hidden_lr_scale: float = option(1.0, GROUP, "learning rate of every block but the output block (the model's last "
                                                "child), as a multiple of --lr (not in the papers)")
    momentum: float = option(0.9, GROUP, "momentum, for sgd")
    weight_decay: float = option(0.0, GROUP, "weight decay: L2 added to the gradient (adam, sgd) or decoupled "
                                             "(adamw)")
    clip_grad_norm: float | None = option(None, GROUP, "scale each step's gradient down to this global norm at most",
                                          metavar="NORM")
    recompute_bn: int = option(0, GROUP, "before each evaluation, recompute the batch norms' running statistics at "
                                          "the current weights from this many training batches (a cumulative "
                                          "average; Ioffe & Szegedy 2015, Alg. 2); 0 keeps the running averages",
                               metavar="BATCHES")
    eval_every: int = option(1, GROUP, "evaluate on the test set every N epochs and after the last (training is "
                                       "the same; fewer evaluations save their time on large test sets)",
                             metavar="N")
    precision: str = option("fp32", GROUP, "fp32; bf16: each step's forward pass and the method's products under "
                                           "bfloat16 autocast (parameters, gradients and optimizer stay float32); "
                                           "fp16: float16 autocast with dynamic loss scaling (methods that "
                                           "backpropagate their loss)", choices=PRECISIONS)
    compile: bool = option(False, GROUP, "run the method's steps through torch.compile (bp; methods with hooks or "
                                         "their own products refuse it); the first steps take longer")

    def check(self) -> None:
        super().check()
        if self.loss is not None:
            OBJECTIVES.get(self.loss)
        if not 0 <= self.label_smoothing < 1:
            raise BeyondBPError(f"{setting('label_smoothing')} must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss not in (None, "ce"):  # a default loss is checked with its task
            raise BeyondBPError(f"{setting('label_smoothing')} applies to loss ce, not {self.loss}")
        OPTIMIZERS.get(self.optimizer)
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise BeyondBPError(f"epochs, batch size and lr must be positive, got {self.epochs}, "
                                f"{self.batch_size}, {self.lr}")
        if not self.hidden_lr_scale > 0:
            raise BeyondBPError(f"{setting('hidden_lr_scale')} must be positive, got {self.hidden_lr_scale}")
        if not 0 <= self.momentum < 1:  # at 1 or more the velocity grows without bound
            raise BeyondBPError(f"{setting('momentum')} must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise BeyondBPError(f"{setting('weight_decay')} must be at least 0, got {self.weight_decay}")
        if self.eval_every < 1:
            raise BeyondBPError(f"{setting('eval_every')} must be at least 1, got {self.eval_every}")
        if self.recompute_bn < 0:
            raise BeyondBPError(f"{setting('recompute_bn')} must be at least 0, got {self.recompute_bn}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise BeyondBPError(f"{setting('clip_grad_norm')} must be positive, got {self.clip_grad_norm}")

    def optimizer_for(self, model: nn.Module, params: list[nn.Parameter] | None = None) -> torch.optim.Optimizer:
        """The optimizer of ``params`` (default: all of ``model``'s), grouped by :meth:`parameter_groups`."""
        params = list(model.parameters()) if params is None else params
        return OPTIMIZERS.get(self.optimizer)(self.parameter_groups(model, params), self.lr, self.momentum,
                                              self.weight_decay)

    def parameter_groups(self, model: nn.Module, params: list[nn.Parameter]) -> list:
        """``params`` as the optimizer's groups: with ``hidden_lr_scale`` the output block's (the model's last
        child) at ``lr``, the others at ``lr × hidden_lr_scale``; otherwise one group."""
        if self.hidden_lr_scale == 1:
            return params
        if not isinstance(model, nn.Sequential) or len(model) < 2:
            raise BeyondBPError(f"hidden_lr_scale needs a model that is a sequence of blocks (nn.Sequential), whose "
                                f"last child is the output block; {type(model).__name__} is not")
        head = {id(p) for p in model[-1].parameters()}
        groups = [{"params": [p for p in params if id(p) not in head], "lr": self.lr * self.hidden_lr_scale},
                  {"params": [p for p in params if id(p) in head]}]
        return [g for g in groups if g["params"]]
