"""Signals for direct feedback: what is projected through the fixed matrices ``B_i``.

Direct-feedback methods differ only in the signal ``s`` (shape ``[batch, C]``; per token,
``[batch, T, C]``, for next-token prediction) whose projection ``s @ B_i`` is handed to
autograd as the gradient of the loss with respect to hidden block ``i``'s output (each
token's signal to that token's position, as Launay et al. 2020 do for language models).
Sign convention (used for every signal): ``s`` points
from the output towards the target, e.g. ``s = t - y``; with ``s @ B_i`` as the gradient
this is DFA (Nøkland 2016) with feedback ``-B_i``, which for the symmetric
initialisations is the same distribution.

Following Flügel et al. (2023, F³, Sec. 3 and the official implementation), with ``y``
the model output (after the output activation) and ``ℓ_n`` the per-sample loss:

=========================  =========  ===========================================
signal                     source     value
=========================  =========  ===========================================
``one_hot_target``         target     ``t`` (= DRTP, Frenkel et al. 2021)
``current_error``          current    ``t - ŷ`` of this forward pass (= DFA)
``delayed_error``          delayed    ``t - y_prev``
``delayed_loss``           delayed    ``-∂ℓ_n/∂y`` at ``y_prev``
``delayed_error_softmax``  delayed    ``t - softmax(y_prev)``
``delayed_loss_softmax``   delayed    ``-∂ℓ_n(softmax(y))/∂y`` at ``y_prev``
``delayed_*_one_hot``      delayed    ``t ⊙ e_prev``: the true class's entry of the
                                      delayed signal scales DRTP's target
``class_error_softmax``    delayed    ``t @ M``: ``M``'s row ``c`` the mean of
                                      ``t - softmax(y_prev)`` over the stored rows
                                      of class ``c`` (not in the papers)
=========================  =========  ===========================================

``ŷ`` is the prediction (``softmax(y)`` for cross-entropy on logits, else ``y``), so that
DFA's signal is the true output error ``-∂ℓ_n/∂a`` up to a constant for every loss
(Nøkland 2016, Eq. 2 with ``e = ŷ - t``); the delayed signals keep the F³ paper's
``t - y`` with the softmax variants spelled out.
``y_prev`` is the sample's output at its previous visit (the previous epoch); before the
first visit the stored value is the target itself, so epoch 1 of every delayed signal
equals DRTP. ``class_error_softmax`` (ours, issue "F³ where it fails") gives every sample of a
class the same signal, its class's mean stored error: a sample's own error is an epoch old, its
class's mean mixes rows of every age up to an epoch (half on average; ``signal_decay`` weighs it
towards the last batches) and is far less noisy; before a class has a stored row it reads ``e_c``,
so the first batch is DRTP. The loss gradients are per sample; the official code stores the gradient
of the batch-mean loss, i.e. ours divided by the batch size (Adam is invariant to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import BeyondBPError
from ..objectives import Objective
from ..registry import Registry

ErrorFn = Callable[[Tensor, Tensor, Objective], Tensor]


def output_error(y: Tensor, t: Tensor, objective: Objective) -> Tensor:
    """``t - y``."""
    return t - y


def prediction_error(y: Tensor, t: Tensor, objective: Objective) -> Tensor:
    """``t - ŷ`` with ``ŷ = objective.prediction(y)``."""
    return t - objective.prediction(y)


def loss_error(y: Tensor, t: Tensor, objective: Objective) -> Tensor:
    """``-∂ℓ_n/∂y_n``."""
    return -objective.output_gradient(y, t)


def softmax_error(y: Tensor, t: Tensor, objective: Objective) -> Tensor:
    """``t - softmax(y)``."""
    return t - torch.softmax(y, dim=-1)


def softmax_loss_error(y: Tensor, t: Tensor, objective: Objective) -> Tensor:
    """``-∂ℓ_n(softmax(y_n))/∂y_n``."""
    y = y.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective.per_sample(torch.softmax(y, dim=-1), t).sum(), y)
    return -grad


#: What a buffer row reads before the sample's first visit (``buffer_init``), from its target and the buffer.
BUFFER_INITS = {
    "target": lambda t, buffer: t,  # the F³ paper: the buffer starts as the targets, so epoch 1 is DRTP
    "zeros": lambda t, buffer: torch.zeros_like(t),  # no signal before the first visit: hidden blocks wait an epoch
    "centered_target": lambda t, buffer: t - t.mean(dim=-1, keepdim=True),  # t - 1/C: nothing common to classes
    "class_mean": lambda t, buffer: t @ buffer.class_means(),  # the mean error of the sample's class written so far
}


class DelayedBuffer:
    """Per-sample storage of the delayed signal, addressed by sample index.

    Rows not yet written read as ``init(t)`` of the sample's target: by default the target
    itself, the F³ initialisation (the buffer starts as the targets) without needing the data
    set up front; see :data:`BUFFER_INITS` for the others. ``"class_mean"`` (not in the papers)
    reads an unvisited sample of class ``c`` as the mean of the rows written so far for samples
    of class ``c`` (``t @ M`` with ``M``'s row ``c`` that mean, or ``e_c`` before any): in the
    first epoch, where the paper's F³ is DRTP, hidden blocks get an error signal a few batches
    old instead of the target (NOTES.md: DRTP's first epoch collapses the ViT and F³ starts
    from that collapse). It keeps each class's sum and count of written rows.

    ``decay < 1`` (not in the papers) reads a written row as ``decay ** age × value``, its age
    in epochs counted as the samples written since it was written, divided by the number of
    samples: a row read right after it was written (a sample at the end of one epoch and the
    start of the next) keeps its weight, one written almost two epochs of updates ago counts
    ``decay²``. The signal of the F³ paper is one epoch old on average (NOTES.md: its age is a
    cause of F³'s late-epoch decline); decay weighs fresher errors more. The class means weigh
    each row by the same ``decay ** age`` (a weighted mean: fresher rows count more, the scale
    stays): with a small ``decay`` they follow the last fraction of an epoch.

    Next-token prediction stores a row per token (``tokens``: ``[N, T, C]``). Two bounded stores
    (issue "language models"; measured in NOTES.md): ``dtype`` float16 or bfloat16 halves the bytes;
    ``projection`` (a fixed ``C × r`` matrix) stores ``value @ projection``, ``r`` numbers per row
    instead of ``C``, and the feedback matrices then act on those ``r`` dimensions: the
    low-dimensional error feedback of Hanut & Kadmon (2025) with a fixed projection. With the
    identity as projection the store is the full one.
    """

    def __init__(self, num_samples: int, num_outputs: int, device: torch.device, init: str = "target",
                 decay: float = 1.0, by_class: bool = False, tokens: int | None = None,
                 dtype: torch.dtype = torch.float32, projection: Tensor | None = None):
        if init not in BUFFER_INITS:
            raise BeyondBPError(f"unknown buffer init '{init}'; known: {', '.join(BUFFER_INITS)}")
        check_decay(decay)
        #: Fixed ``C × r`` matrix: rows are stored (and read) as ``value @ projection`` (see :class:`StoreOptions`).
        self.projection = None if projection is None else projection.to(device)
        width = num_outputs if projection is None else projection.shape[1]
        self.values = torch.zeros(num_samples, *(() if tokens is None else (tokens,)), width, device=device,
                                  dtype=dtype)
        self.written = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.init = BUFFER_INITS[init]
        self.decay = decay
        #: Whether each class's sum of written rows and their count are kept (soft targets: weights).
        self.by_class = by_class or init == "class_mean"
        if self.by_class and (tokens is not None or projection is not None):
            raise BeyondBPError("class means of the delayed signal (buffer_init class_mean, a per-class signal) need "
                                "one full row per sample: not per token, not a low-dimensional store")
        if self.by_class:
            self.class_sum = torch.zeros(num_outputs, num_outputs, device=device)
            self.class_count = torch.zeros(num_outputs, device=device)
        if decay < 1:  # when each row was written, on a clock of samples written
            self.stamp = torch.zeros(num_samples, dtype=torch.int64, device=device)
            self.clock = torch.zeros((), dtype=torch.int64, device=device)
        #: In data-parallel training: gathers every rank's ``(index, values)`` so all buffers stay equal.
        self.sync: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None

    @property
    def nbytes(self) -> int:
        """The stored rows' size in bytes."""
        return self.values.numel() * self.values.element_size()

    def _per_sample(self, values: Tensor) -> Tensor:
        """``[batch]`` values shaped to multiply rows of ``[batch, (T,) width]``."""
        return values.view(-1, *(1,) * (self.values.dim() - 1))

    def read(self, index: Tensor, t: Tensor) -> Tensor:
        values = self.values[index].float()
        if self.decay < 1:  # the faithful method's step pays nothing for the option
            values = values * self._per_sample(self.weights(index))
        first = self.init(t, self)
        if self.projection is not None:
            first = first @ self.projection
        return torch.where(self._per_sample(self.written[index]), values, first)

    def weights(self, index: Tensor) -> Tensor:
        """``decay ** age`` of rows ``index`` now (ones without decay)."""
        if self.decay == 1:
            return torch.ones(len(index), device=self.values.device)
        return self.decay ** ((self.clock - self.stamp[index]).to(self.values.dtype) / len(self.values))

    def class_means(self) -> Tensor:
        """``M`` (C × C): row ``c`` the mean of the rows written for class ``c`` (each weighted by ``decay ** age``),
        ``e_c`` while there is none."""
        count = self.class_count[:, None]
        return torch.where(count > 0, self.class_sum / count.clamp(min=1e-12), torch.eye(len(count),
                                                                                          device=count.device))

    def write(self, index: Tensor, values: Tensor, t: Tensor) -> None:
        values = values.detach()
        if self.projection is not None:
            values = values @ self.projection
        if self.sync is not None and self.by_class:  # the targets travel with the rows: every rank counts classes
            index, rows = self.sync(index, torch.cat([values, t], dim=1))
            values, t = rows.split(values.shape[1], dim=1)
        elif self.sync is not None:
            index, values = self.sync(index, values)
        if self.by_class:  # rows written before leave their class's sums with their weight now
            old = self.written[index]
            weighted = t[old] * self.weights(index[old])[:, None]
            self.class_sum -= weighted.T @ self.values[index[old]]
            self.class_count -= weighted.sum(dim=0)
        self.values[index] = values.to(self.values.dtype)
        self.written[index] = True
        self.advance(len(index))
        if self.decay < 1:
            self.stamp[index] = self.clock
        if self.by_class:  # the new rows enter with weight 1, after the others aged
            self.class_sum += t.T @ values
            self.class_count += t.sum(dim=0)

    def advance(self, samples: int) -> None:
        """Count ``samples`` more as passed (what :meth:`write` does): a pipeline stage that never writes
        keeps its clock with the stage that does."""
        if self.decay < 1:
            self.clock += samples
            if self.by_class:
                factor = self.decay ** (samples / len(self.values))
                self.class_sum *= factor
                self.class_count *= factor

    def state_dict(self) -> dict[str, Tensor]:
        state = {"values": self.values, "written": self.written}
        if self.projection is not None:
            state.update(projection=self.projection)
        if self.decay < 1:
            state.update(stamp=self.stamp, clock=self.clock)
        if self.by_class:
            state.update(class_sum=self.class_sum, class_count=self.class_count)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["values"].shape != self.values.shape or state["values"].dtype != self.values.dtype:
            raise ValueError(
                f"delayed buffer has {state['values'].dtype} values of shape {tuple(state['values'].shape)}, expected "
                f"{self.values.dtype} of shape {tuple(self.values.shape)}"
            )
        if ("projection" in state) != (self.projection is not None):
            raise ValueError("the delayed buffer's checkpoint and this run disagree on a low-dimensional store")
        if ("stamp" in state) != (self.decay < 1):
            raise ValueError("the delayed buffer's checkpoint and this run disagree on signal_decay")
        if ("class_sum" in state) != self.by_class:
            raise ValueError("the delayed buffer's checkpoint and this run disagree on counting classes "
                             "(buffer_init class_mean, a per-class signal)")
        for name, tensor in self.state_dict().items():
            tensor.copy_(state[name])


def check_decay(decay: float) -> None:
    if not 0 < decay <= 1:
        raise BeyondBPError(f"signal_decay must be in (0, 1] (1: no decay), got {decay}")


@dataclass(frozen=True)
class Signal:
    """How a direct-feedback signal is formed; see the module docstring for the table."""

    name: str
    source: str  # "target", "current" or "delayed"
    error: ErrorFn | None = None
    one_hot: bool = False
    per_class: bool = False
    classification_only: bool = False

    @property
    def delayed(self) -> bool:
        return self.source == "delayed"

    @property
    def known_in_advance(self) -> bool:
        """Whether the signal exists before the forward pass (so blocks can update as it runs)."""
        return self.source != "current"

    def before_pass(self, t: Tensor, index: Tensor, buffer: DelayedBuffer | None) -> Tensor | None:
        """The signal, if it is known before the forward pass (target, delayed); else None."""
        if self.source == "target":
            return t
        if self.source == "delayed" and self.per_class:
            return t @ buffer.class_means()
        if self.source == "delayed":
            previous = buffer.read(index, t)
            return t * previous if self.one_hot else previous
        return None

    def after_pass(self, y: Tensor, t: Tensor, index: Tensor, objective: Objective,
                   buffer: DelayedBuffer | None) -> Tensor | None:
        """The current error's signal; a delayed signal instead stores this pass's value for the next visit."""
        if self.source == "current":
            return self.error(y, t, objective)
        if self.source == "delayed":
            buffer.write(index, self.error(y, t, objective), t)
        return None


SIGNALS: Registry[Signal] = Registry("signal")


def _add(signal: Signal, help: str) -> None:
    SIGNALS.register(signal.name, help)(signal)


_add(Signal("one_hot_target", "target"), "the target t (= DRTP)")
_add(Signal("current_error", "current", prediction_error),
     "t - prediction of the current pass, the true output error (= DFA)")
_add(Signal("delayed_error", "delayed", output_error), "t - y from the sample's previous visit")
_add(Signal("delayed_loss", "delayed", loss_error), "-dL/dy from the sample's previous visit")
_add(
    Signal("delayed_error_one_hot", "delayed", output_error, one_hot=True, classification_only=True),
    "t * (t - y_prev): the true class's delayed error scales the target",
)
_add(
    Signal("delayed_loss_one_hot", "delayed", loss_error, one_hot=True, classification_only=True),
    "t * (-dL/dy_prev): the true class's delayed loss gradient scales the target",
)
_add(
    Signal("delayed_error_softmax", "delayed", softmax_error, classification_only=True),
    "t - softmax(y_prev)",
)
_add(
    Signal("delayed_loss_softmax", "delayed", softmax_loss_error, classification_only=True),
    "-dL(softmax(y))/dy at y_prev",
)
_add(
    Signal("class_error_softmax", "delayed", softmax_error, per_class=True, classification_only=True),
    "the mean of t - softmax(y_prev) over the buffer's rows of the sample's class (not in the papers)",
)
