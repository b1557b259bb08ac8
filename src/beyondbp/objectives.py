"""Output heads and losses, chosen by task.

The model's last block ends in the objective's output activation, so that the model's
output ``y`` is what the loss and the F³ signals see (as in Flügel et al. 2023:
sigmoid output + binary cross-entropy for classification, linear output + MSE for
regression). Targets are float tensors of shape ``[batch, C]``: one-hot for
classification, standardised values for regression. Token tasks (``lm``: next-token
prediction) have outputs ``[batch, T, C]`` and targets ``[batch, T, C]``, one-hot per token;
a token whose class index is :data:`IGNORE_INDEX` (padding) becomes a row of zeros and
counts in no loss. The class axis is always the last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import BeyondBPError
from .options import setting
from .registry import Registry

#: The class index of a token that is no target (padding), PyTorch's convention.
IGNORE_INDEX = -100
#: Tasks whose targets are classes: per sample, or per token (``lm``).
CLASS_TASKS = ("classification", "lm")


class Objective:
    """A loss on the model output ``y`` with the output activation that produces ``y``.

    ``per_sample(y, t)`` returns one loss per sample (averaged over outputs; for token outputs,
    averaged over the sample's tokens that are targets); calling the objective returns the batch
    mean, the quantity that is minimised.
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
        one-hot rows; a ``[batch]`` float vector is one output; ``[batch, C]`` values pass as they are.
        Class indices per token (integers ``[batch, T]``) become ``[batch, T, num_outputs]``, with a row of
        zeros where the index is :data:`IGNORE_INDEX`."""
        if not t.is_floating_point():
            return class_targets(t, num_outputs)
        if t.dim() == 3 and t.shape[2] == num_outputs:
            return t
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


def class_targets(t: Tensor, num_outputs: int) -> Tensor:
    """One-hot rows for class indices ``[batch]`` or ``[batch, T]`` (zeros where ``t`` is :data:`IGNORE_INDEX`)."""
    if t.dim() not in (1, 2):
        raise BeyondBPError(f"integer targets must be class indices of shape [batch] (or [batch, tokens]), got "
                            f"shape {tuple(t.shape)}")
    kept = t != IGNORE_INDEX if t.dim() == 2 else torch.ones_like(t, dtype=torch.bool)
    classes = t[kept]
    if len(classes) and (classes.min() < 0 or classes.max() >= num_outputs):
        bad = int(classes.max() if classes.max() >= num_outputs else classes.min())
        raise BeyondBPError(f"class index {bad} is out of range for {num_outputs} outputs (0 to {num_outputs - 1}"
                            + (f"; {IGNORE_INDEX} marks a token that is no target)" if t.dim() == 2 else ")"))
    return F.one_hot(torch.where(kept, t, 0).long(), num_outputs).float() * kept[..., None]


def token_losses(y: Tensor, t: Tensor) -> Tensor:
    """Cross-entropy of each token, ``[batch, T]``, for logits and one-hot targets ``[batch, T, C]``; zero for
    a token that is no target."""
    return F.cross_entropy(y.transpose(1, 2), t.transpose(1, 2), reduction="none")


def token_classes(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(class index, is a target)`` per token, ``[batch, T]`` each, from indices (:data:`IGNORE_INDEX` for
    padding) or from one-hot rows ``[batch, T, C]`` (zeros for padding)."""
    if t.is_floating_point():
        return t.argmax(dim=-1), target_tokens(t)
    kept = t != IGNORE_INDEX
    return torch.where(kept, t, 0).long(), kept


def target_tokens(t: Tensor) -> Tensor:
    """Which tokens of one-hot targets ``[batch, T, C]`` are targets (not padding): ``[batch, T]`` booleans."""
    return t.sum(dim=-1) > 0


OBJECTIVES: Registry[type[Objective]] = Registry("loss")


@OBJECTIVES.register("bce", "sigmoid output, binary cross-entropy on one-hot targets (F³ paper)")
class BinaryCrossEntropy(Objective):
    name = "bce"
    tasks = ("classification",)

    def output_activation(self) -> nn.Module:
        return nn.Sigmoid()

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        if y.isnan().any():  # a diverged output: a NaN loss (its graph kept for the method's backward), which
            return (y * float("nan")).mean(dim=1)  # the trainer reports as divergence
        if len(y) and (y.min() < 0 or y.max() > 1):
            raise BeyondBPError(f"loss 'bce' needs outputs in [0, 1] (a sigmoid output layer); the model's outputs "
                                f"range from {y.min().item():.3g} to {y.max().item():.3g}: end the model in "
                                f"nn.Sigmoid() or use loss 'ce'")
        return F.binary_cross_entropy(y, t, reduction="none").mean(dim=1)


@OBJECTIVES.register("ce", "linear output (logits), softmax cross-entropy (per sample, or per token)")
class CrossEntropy(Objective):
    """``label_smoothing`` ε: the loss against ``(1 - ε) t + ε / C`` (Szegedy et al. 2016); the targets that
    :meth:`targets` returns, and so direct feedback's signals, stay one-hot."""

    name = "ce"
    tasks = CLASS_TASKS

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        if y.dim() == 3:  # a sample's mean over its target tokens
            kept = target_tokens(t)
            return (token_losses(y, self.smoothed(t) * kept[..., None]).sum(dim=1)
                    / kept.sum(dim=1).clamp(min=1))
        return F.cross_entropy(y, self.smoothed(t), reduction="none")

    def smoothed(self, t: Tensor) -> Tensor:
        return t if not self.label_smoothing else t * (1 - self.label_smoothing) + self.label_smoothing / t.shape[-1]

    def prediction(self, y: Tensor) -> Tensor:
        return torch.softmax(y, dim=-1)


@OBJECTIVES.register("mse", "linear output, mean squared error")
class MeanSquaredError(Objective):
    name = "mse"
    tasks = ("regression", "classification")

    def per_sample(self, y: Tensor, t: Tensor) -> Tensor:
        return (y - t).pow(2).mean(dim=1)


#: Each task's loss when none is named: the F³ paper's for classification and regression.
DEFAULT_LOSS = {"classification": "bce", "regression": "mse", "lm": "ce"}


def make_objective(name: str | None, task: str, label_smoothing: float = 0.0) -> Objective:
    """The objective called ``name``, or the task's default when ``name`` is None (:data:`DEFAULT_LOSS`);
    ``label_smoothing`` for ``ce``."""
    default = name is None
    name = DEFAULT_LOSS[task] if default else name
    if label_smoothing and name != "ce":
        raise BeyondBPError(f"label smoothing applies to loss ce, not {name}"
                            + (f" (the default for {task}: give {setting('loss', 'ce')})" if default else ""))
    objective = OBJECTIVES.get(name)(label_smoothing) if label_smoothing else OBJECTIVES.get(name)()
    if task not in objective.tasks:
        raise BeyondBPError(
            f"loss '{name}' does not fit a {task} data set; use one of: "
            + ", ".join(n for n in OBJECTIVES.names() if task in OBJECTIVES.get(n).tasks)
        )
    return objective
