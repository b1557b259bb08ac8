"""Output heads and losses, chosen by task.

The model's last block ends in the objective's output activation, so that the model's
output ``y`` is what the loss and the F³ signals see (as in Flügel et al. 2023:
sigmoid output + binary cross-entropy for classification, linear output + MSE for
regression). Targets are float tensors of shape ``[batch, C]``: one-hot for
classification, standardised values for regression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import BeyondBPError
from .registry import Registry


class Objective:
    """A loss on the model output ``y`` with the output activation that produces ``y``.

    ``per_sample(y, t)`` returns one loss per sample (averaged over outputs);
    calling the objective returns the batch mean, the quantity that is minimised.
    """

    name: str
    tasks: tuple[str, ...]

    def output_activation(self) -> nn.Module:
        return nn.Identity()

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, y: Tensor, t: Tensor) -> Tensor:
        return self.per_sample(y, t).mean()

    def prediction(self, y: Tensor) -> Tensor:
        """The prediction ``ŷ`` compared with the target: ``y`` itself unless the loss applies a link.

        ``t - ŷ`` is then proportional to ``-∂ℓ/∂a`` for the output block's pre-activation ``a``
        (sigmoid + BCE, linear + MSE, softmax + CE alike), the error DFA feeds back.
        """
        return y

    def targets(self, t: Tensor, num_outputs: int) -> Tensor:
        """``t`` as float targets ``[batch, num_outputs]``: class indices (integers, ``[batch]``) become
        one-hot rows; a ``[batch]`` float vector is one output; ``[batch, C]`` values pass as they are."""
        if not t.is_floating_point():
            if t.dim() != 1:
                raise BeyondBPError(f"integer targets must be class indices of shape [batch], got shape "
                                    f"{tuple(t.shape)}")
            if len(t) and (t.min() < 0 or t.max() >= num_outputs):
                raise BeyondBPError(f"class index {int(t.max() if t.max() >= num_outputs else t.min())} is out of "
                                    f"range for {num_outputs} outputs (0 to {num_outputs - 1})")
            return F.one_hot(t.long(), num_outputs).float()
        if t.dim() == 1:
            t = t[:, None]
        if t.dim() != 2 or t.shape[1] != num_outputs:
            raise BeyondBPError(f"targets of shape {tuple(t.shape)} do not fit a model with {num_outputs} outputs; "
                                f"give class indices [batch] or values [batch, {num_outputs}]")
        return t

    def output_gradient(self, y: Tensor, t: Tensor) -> Tensor:
        """Per-sample ``∂ℓ_n/∂y_n`` (not divided by the batch size), without touching ``y``'s graph."""
        y = y.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.per_sample(y, t).sum(), y)
        return grad


OBJECTIVES: Registry[type[Objective]] = Registry("loss")


@OBJECTIVES.register("bce", "sigmoid output, binary cross-entropy on one-hot targets (F³ paper)")
class BinaryCrossEntropy(Objective):
    name = "bce"
    tasks = ("classification",)

    def output_activation(self) -> nn.Module:
        return nn.Sigmoid()

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        if y.isnan().any():  # a diverged output: a NaN loss, which the trainer reports as divergence
            return torch.full(y.shape[:1], float("nan"), device=y.device)
        if len(y) and (y.min() < 0 or y.max() > 1):
            raise BeyondBPError(f"loss 'bce' needs outputs in [0, 1] (a sigmoid output layer); the model's outputs "
                                f"range from {y.min().item():.3g} to {y.max().item():.3g}: end the model in "
                                f"nn.Sigmoid() or use loss 'ce'")
        return F.binary_cross_entropy(y, t, reduction="none").mean(dim=1)


@OBJECTIVES.register("ce", "linear output (logits), softmax cross-entropy")
class CrossEntropy(Objective):
    name = "ce"
    tasks = ("classification",)

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        return F.cross_entropy(y, t, reduction="none")

    def prediction(self, y: Tensor) -> Tensor:
        return torch.softmax(y, dim=1)


@OBJECTIVES.register("mse", "linear output, mean squared error")
class MeanSquaredError(Objective):
    name = "mse"
    tasks = ("regression", "classification")

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        return (y - t).pow(2).mean(dim=1)


def make_objective(name: str | None, task: str) -> Objective:
    """The objective called ``name``, or the task's default (bce / mse) when ``name`` is None."""
    if name is None:
        name = "bce" if task == "classification" else "mse"
    objective = OBJECTIVES.get(name)()
    if task not in objective.tasks:
        raise BeyondBPError(
            f"loss '{name}' does not fit a {task} data set; use one of: "
            + ", ".join(n for n in OBJECTIVES.names() if task in OBJECTIVES.get(n).tasks)
        )
    return objective
