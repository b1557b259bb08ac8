"""Direct feedback: a signal projected by fixed random matrices to every hidden block.

One mechanism serves DFA (Nøkland 2016), DRTP (Frenkel et al. 2021), F³ (Flügel et al.
2023) and shallow learning; they differ only in the signal (see :mod:`.signals`).

For a model ``h_i = f_i(h_{i-1})``, ``i = 1..L``, hidden block ``i < L`` receives

    ∂L/∂h_i := s @ B_i            (B_i: C × n_i, fixed, n_i = h_i.numel() / batch)

and autograd inside the block turns it into weight gradients; the output block ``L``
gets its true local gradient ``∂L/∂θ_L``. No gradient crosses a block boundary: each
block's input is detached, so no input gradient is ever computed and there is no
sequential backward chain. The injected value is *not* divided by the batch size (F³
paper), unlike the mean-reduced loss at the output; ``batch_mean=True`` divides it.

Token sequences and feature maps (:mod:`.read_out`). Outputs ``[batch, tokens, width]``: ``B_i`` is C × width
and ``s @ B_i`` enters the positions the model's read-out uses, split equally among them
(``token_feedback="read-out"``, the default; :mod:`.read_out`): the class token of a ViT
or BERT gets all of it, and behind a mean over tokens every token gets ``s @ B_i``
divided by the number of tokens, the form the true gradient takes there and the form
Launay et al. (2020, "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
Architectures") use for transformers, with one feedback matrix for all positions.
``"shared"`` gives every token that share whatever the read-out. Maps ``[batch, channels, H, W]``
behind a read-out that averages them over space: ``B_i`` is C × channels and every position gets
``s @ B_i / (H W)``; behind any other read-out (and with ``"per-token"``), one value per element.
``"per-token"`` draws
C × (tokens · width), an independent matrix per position; only its mean over tokens
reaches the output, so most of what it injects is noise to the output.

Next-token prediction (task ``lm``: outputs and signals ``[batch, T, C]``): ``B_i`` is
C × width and each token's signal enters that token's position, ``s_t @ B_i`` (Launay
et al. 2020); a point must then output ``[batch, T, width]``. Feedback per block (the
default points) or per sublayer (attention and MLP as points) is a choice of points.

Where the signal is taken (``feedback_from``): ``"output"`` projects the signal over the C outputs (Nøkland
2016). ``"head-input"`` first carries it back through the head (everything after the last point) by the head's
exact backward, ``s_h = J_headᵀ s``, and projects that: ``B_i`` then has the head input's width as rows.
Launay et al. (2020) train their language models this way (their feedback enters before the projection to
the vocabulary, whose size would make ``B_i`` huge); it needs the head's Jacobian at this pass, so it runs in
autograd execution, and the head's input must be ``[batch, width]`` (``[batch, T, width]`` per token).

Any ``nn.Module`` works: the signal enters at its feedback points (module names, see
:mod:`.points`; default: every block but the last of a sequence of blocks, or the
top-level children of any other module in the order they run).

Two executions, with identical gradients:

- ``"autograd"``: the whole forward pass, then one short ``backward`` per point (each
  segment's graph ends at the previous point's detached output, so none waits for
  another). Works for every signal, including DFA's current error, which exists only after
  the forward pass, and for every model.
- ``"forward"``: for a signal known before the forward pass (DRTP, F³'s delayed
  signals, shallow), each block computes its gradient as soon as its output exists and
  its graph is freed at once: only one block's activations are alive at a time (F³
  paper, Sec. 3.3). ``Linear`` + activation blocks skip autograd and update in place
  (:mod:`.local_update`: three activation-sized tensors alive instead of five). On a model
  that is not a sequence of blocks cut at its children, each segment's backward runs inside
  the point's forward hook instead.
  ``unlocked=True`` also applies the optimizer to each block right away (no update
  locking); the training loop provides that step through :meth:`DirectFeedback.connect`.

``"auto"`` (default) picks ``"forward"`` where the signal allows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BeyondBPError, UnsupportedModelError
from ..objectives import CLASS_TASKS, Objective, target_tokens
from .base import Method, StepResult, model_device
from .direct_options import BUFFER_DTYPES, DirectOptions, F3Options
from .feedback_init import feedback_matrix
from .local_update import linear_block, local_forward, local_gradient
from .points import FeedbackPoints
from .read_out import ReadOut, probe_read_out
from .signals import SIGNALS, DelayedBuffer, Signal


def sequence_segments(model: nn.Module, points: list[str] | None) -> tuple[list[nn.Module], nn.Module] | None:
    """``(hidden segments, head)`` of an ``nn.Sequential`` cut at some of its children (a segment of
    several children becomes an ``nn.Sequential`` of them); None for any other model or points."""
    if not isinstance(model, nn.Sequential) or not points:
        return None
    names = [name for name, _ in model.named_children()]
    if not set(points) <= set(names):
        return None
    cuts = [names.index(p) + 1 for p in points]
    if cuts != sorted(cuts):
        return None
    children = list(model)
    parts = [children[a:b] for a, b in zip([0] + cuts, cuts + [len(children)])]
    if not parts[-1]:
        return None
    as_module = lambda part: part[0] if len(part) == 1 else nn.Sequential(*part)
    return [as_module(part) for part in parts[:-1]], as_module(parts[-1])


NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def centered(s: Tensor) -> Tensor:
    """``s - mean_c(s)``: each sample's (or token's) signal without its mean over the C classes."""
    return s - s.mean(dim=-1, keepdim=True)


def signal_of(s: Tensor, t: Tensor, center: bool) -> Tensor:
    """The signal as projected: centred with ``center``; per token, zero for a token that is no target (padding)."""
    s = centered(s) if center else s
    return s * target_tokens(t)[..., None] if s.dim() == 3 else s


def excluded_parameters(model: nn.Module, kinds: Sequence[str]) -> set[int]:
    """The ids of ``model``'s parameters of the given kinds (``"bias"``, ``"norm"``)."""
    ids = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if ("norm" in kinds and isinstance(module, NORMS)) or ("bias" in kinds and name == "bias"):
                ids.add(id(p))
    return ids


class DirectFeedback(Method):
    """Direct feedback of ``signal`` to every hidden block; ``signal=None`` freezes them (shallow).

    Args:
        signal: a name from :data:`~beyondbp.methods.signals.SIGNALS`, or None.
        options: the section of options (:class:`~.direct_options.F3Options`, checked when built), or its
            fields as keywords:

            - ``feedback_init``, ``normalize``: the ``B_i`` (see :mod:`.feedback_init`), divided by ``sqrt(n_i)``
              with ``normalize``.
            - ``batch_mean``: divide the injected gradient by the batch size.
            - ``token_feedback``: ``"read-out"``, ``"shared"`` or ``"per-token"`` feedback for token sequences
              (see above).
            - ``execution``: ``"auto"``, ``"autograd"`` or ``"forward"`` (see the module docstring).
            - ``unlocked``: step each block as soon as its gradient exists (needs ``"forward"``).
            - ``feedback_points``: module names where the signal enters (see :mod:`.points`); empty: the defaults.
            - ``buffer_init``: what a delayed signal reads before a sample's first visit (the F³ paper:
              ``"target"``, so epoch 1 is DRTP; ``"zeros"``; ``"centered_target"``: ``t - 1/C``;
              ``"class_mean"``: the mean of the rows written so far for the sample's class); see
              :data:`~beyondbp.methods.signals.BUFFER_INITS`.
            - ``center_signal``: remove each sample's mean over classes from the signal before projecting it:
              ``s - mean_c(s)``. A target or a delayed error has a component common to all classes (``1/C``
              for a one-hot target) that ``B_i`` turns into the same push for every sample; LayerNorm and
              residual streams do not absorb it (NOTES.md, the ViT suites). Not in the papers.
            - ``feedback_exclude``: parameter kinds of hidden blocks that receive no direct feedback and stay at
              their initialisation: ``"bias"`` (every bias) and ``"norm"`` (LayerNorm, GroupNorm and
              BatchNorm weights and biases): the signal's projection says where to move the block's output,
              not how to re-centre or re-scale it. Not in the papers.
            - ``signal_decay``: a delayed signal read as ``signal_decay ** age × value``, its age in epochs (see
              :class:`~beyondbp.methods.signals.DelayedBuffer`); 1: the paper's undecayed signal.
        name: registry name of the preset (``dfa``, ``drtp``, ``f3``, ``shallow``).
    """

    def __init__(self, signal: str | None, options: DirectOptions | None = None, name: str = "direct",
                 **settings: Any):
        if options is not None and settings:
            raise TypeError("give the options as a section or as keywords, not both")
        options = options if options is not None else F3Options(**settings)
        if not isinstance(options, F3Options):  # the presets without a delayed signal read its defaults
            options = F3Options(**vars(options))
        self.options = options
        self.signal: Signal | None = None if signal is None else SIGNALS.get(signal)
        delayed = self.signal is not None and self.signal.delayed
        for setting, value, default in (("signal_decay", options.signal_decay, 1.0),
                                        ("buffer_rank", options.buffer_rank, 0),
                                        ("buffer_dtype", options.buffer_dtype, "float32")):
            if value != default and not delayed:
                raise BeyondBPError(f"{setting} needs a delayed signal (f3's); {name}'s "
                                    f"{'no signal' if self.signal is None else self.signal.name} keeps no buffer")
        if options.buffer_rank and self.signal.one_hot:
            raise BeyondBPError(f"buffer_rank: signal '{self.signal.name}' multiplies the stored error with the "
                                f"target class by class, which needs the full error; use e.g. delayed_error_softmax")
        self.from_head = options.feedback_from == "head-input"
        if self.from_head and options.buffer_rank:
            raise BeyondBPError("feedback_from head-input carries the signal over the C outputs back through the "
                                "head; a buffer_rank store keeps only r dimensions of it: leave out one of them")
        in_advance = self.signal is None or (self.signal.known_in_advance and not self.from_head)
        if options.execution == "forward" and not in_advance:
            why = ("is only known after the forward pass" if not self.from_head else
                   "is carried back through the head at this pass (feedback_from head-input)")
            raise BeyondBPError(f"{name}'s signal '{self.signal.name}' {why}; use execution 'autograd'")
        execution = options.execution
        self.execution = ("forward" if in_advance else "autograd") if execution == "auto" else execution
        if options.unlocked and self.execution != "forward":
            raise BeyondBPError(f"unlocked updates need execution 'forward' (got '{self.execution}' for {name})")
        self.name = name
        #: Called with each segment's parameters once their gradient is in ``.grad`` (unlocked mode).
        self.after_block: Callable[[list[nn.Parameter]], None] | None = None
        self.excluded: set[int] = set()
        self.feedback: list[Tensor] | None = None
        self.buffer: DelayedBuffer | None = None
        self.points: FeedbackPoints | None = None
        self.sequence: tuple[list[nn.Module], nn.Module] | None = None
        #: How the model's read-out uses the last point's positions (:mod:`.read_out`); None until probed.
        self.read_out: ReadOut | None = None
        #: feedback_from head-input: the width of the head's input, the rows of every ``B_i``.
        self.head_width: int | None = None

    @property
    def unlocked(self) -> bool:
        return self.options.unlocked

    @property
    def buffer_init(self) -> str:
        return self.options.buffer_init

    @property
    def label(self) -> str:
        return f"{self.name}:{self.signal.name}" if self.name == "f3" else self.name

    @property
    def needs_index(self) -> bool:
        return self.signal is not None and self.signal.delayed

    @property
    def reads_class_means(self) -> bool:
        """Whether the signal reads the buffer's means per class (``buffer_init`` class_mean, a per-class
        signal): these change with every batch the last block writes."""
        return self.needs_index and (self.options.buffer_init == "class_mean" or self.signal.per_class)

    def prepare(self, model: nn.Module) -> None:
        self.points = FeedbackPoints(model, self.options.points, self.label)
        if self.unlocked and self.points.shared:
            names = next(iter(self.points.shared.values()))
            raise UnsupportedModelError(f"unlocked {self.label}: parameter {' = '.join(names)} is shared by several "
                                        f"modules, and each segment would step it on its own part of its gradient")
        self.excluded = excluded_parameters(model, self.options.feedback_exclude)
        self.sequence = sequence_segments(model, self.points.names)
        self.feedback = None
        self.buffer = None
        self.read_out = None
        if self.signal is None:
            return
        if self.signal.classification_only and self.task not in CLASS_TASKS:
            raise BeyondBPError(f"signal '{self.signal.name}' needs a classification data set, got {self.task}")
        if self.signal.delayed:
            if self.options.buffer_init == "class_mean" and self.task != "classification":
                raise BeyondBPError(f"buffer_init class_mean needs a classification data set, got {self.task}")
            if self.num_samples is None:
                raise BeyondBPError(f"signal '{self.signal.name}' needs num_samples (the training set size)")
            rank = self.options.buffer_rank
            projection = torch.randn(self.num_outputs, rank) / math.sqrt(rank) if rank else None
            self.buffer = DelayedBuffer(self.num_samples, self.num_outputs, model_device(model),
                                        self.options.buffer_init, self.options.signal_decay,
                                        by_class=self.signal.per_class, tokens=self.tokens,
                                        dtype=BUFFER_DTYPES[self.options.buffer_dtype], projection=projection)

    @property
    def signal_width(self) -> int:
        """The rows of each ``B_i``: the number of outputs, the delayed buffer's rank, or the head input's
        width (``feedback_from`` head-input)."""
        return self.head_width or self.options.buffer_rank or self.num_outputs

    def _feedback_width(self, i: int, h: Tensor) -> int:
        """The columns of ``B_i`` for point ``i``'s output ``h`` (see the module docstring)."""
        if self.tokens is not None:
            if h.dim() != 3 or h.shape[1] != self.tokens:
                name = self.points.names[i] if self.points is not None and i < len(self.points.names) else i
                raise UnsupportedModelError(f"{self.label}: feedback point '{name}' outputs shape {tuple(h.shape)}; "
                                            f"feedback per token needs [batch, {self.tokens}, width]: choose points "
                                            f"whose outputs keep the token axis (--feedback-points)")
            return h.shape[-1]
        if h.dim() == 4 and self.read_out is not None and self.read_out.pooled:
            return h.shape[1]
        return h[0].numel() if self.options.token_feedback == "per-token" or h.dim() != 3 else h.shape[-1]

    def find_read_out(self, model: nn.Module, x: Tensor) -> None:
        """Find, once, the positions the read-out of ``model`` uses (:mod:`.read_out`), probing with two
        samples of ``x``; nothing to find for signals per token or another ``token_feedback``. Matrices loaded
        from a checkpoint written before the read-out was stored were drawn for tokens sharing the signal: a
        model that reads some positions only is refused then (feature maps keep the matrices' per-element form)."""
        if self.read_out is not None:
            return
        if self.tokens is not None or self.options.token_feedback != "read-out":
            self.read_out = ReadOut(pooled=self.options.token_feedback == "shared")
            return
        name = self.points.resolve(x)[-1]
        point = dict(model.named_modules())[name]
        self.read_out = probe_read_out(model, point, x[:2],
                                       f"{self.label}: feedback point '{name}' ({type(point).__name__})")
        if self.feedback is not None and self.read_out.weights is not None:  # matrices from an older checkpoint
            raise BeyondBPError(f"{self.label}: this checkpoint was trained with feedback shared by every token, "
                                f"and this model's read-out uses only some positions; resume it with "
                                f"--token-feedback shared")

    @property
    def read_weights(self) -> Tensor | None:
        """The weights of the token positions read (see :mod:`.read_out`); None: every token alike."""
        return None if self.read_out is None else self.read_out.weights

    def _matrix(self, i: int, h: Tensor) -> Tensor:
        """``B_i``, drawn (in block order) the first time block ``i``'s output size is seen."""
        if self.feedback is None:
            self.feedback = []
        if i == len(self.feedback):
            w = self.read_weights
            if w is not None and self.tokens is None and h.dim() == 3 and h.shape[1] != len(w):
                name = self.points.names[i] if self.points is not None and i < len(self.points.names) else i
                raise UnsupportedModelError(f"{self.label}: feedback point '{name}' outputs {h.shape[1]} tokens, "
                                            f"the read-out reads {int((w > 0).sum())} of {len(w)}; use "
                                            f"--token-feedback shared or per-token")
            options = self.options
            matrix = feedback_matrix(options.feedback_init, self.signal_width, self._feedback_width(i, h),
                                     options.normalize)
            self.feedback.append(matrix.to(h.device))
        return self.feedback[i]

    @torch.no_grad()
    def draw_matrices(self, hidden_blocks: Sequence[nn.Module], x: Tensor) -> list[Tensor]:
        """Every ``B_i`` at once, in block order, sized by one forward pass of ``x`` in eval mode: the same
        draws as the first training step makes one by one (a pipeline stage needs later blocks' matrices
        without running those blocks)."""
        h = x
        for i, block in enumerate(hidden_blocks):
            was_training = block.training
            h = block.eval()(h)
            block.train(was_training)
            self._matrix(i, h)
        return self.feedback or []

    def injected(self, s: Tensor, b: Tensor, h: Tensor) -> Tensor:
        """``s @ B`` shaped like ``h``: a signal per token gives each token its own; a C × width ``B`` on a
        token sequence gives the positions read out the same value divided by their number (every token:
        divided by the number of tokens). ``batch_mean``
        divides by the batch size (by the tokens of the batch for a signal per token)."""
        grad = s @ b
        if s.dim() == 3:
            grad = grad.to(h.dtype)
        elif grad.shape[1] == h[0].numel():
            grad = grad.view_as(h)
        elif h.dim() == 4:
            grad = (grad / h[0, 0].numel())[:, :, None, None].expand_as(h)
        elif self.read_weights is not None:
            grad = grad.unsqueeze(1) * self.read_weights.to(grad.device)[:, None]
        else:
            grad = (grad / h.shape[1]).unsqueeze(1).expand_as(h)
        return grad / s.shape[:-1].numel() if self.options.batch_mean else grad

    def connect(self, parallel=None, step_segment=None) -> None:
        """Unlocked updates take ``step_segment``; data parallelism gathers the delayed buffer's writes."""
        super().connect(parallel, step_segment)
        if self.unlocked:
            if parallel is not None:
                raise BeyondBPError("unlocked updates cannot be combined with data-parallel training: each block "
                                    "would step before the ranks' gradients are averaged")
            self.after_block = step_segment
        if self.buffer is not None:
            self.buffer.sync = parallel.gather_rows if parallel is not None else None

    def compute(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor | None,
                objective: Objective) -> StepResult:
        if self.unlocked and self.after_block is None:
            raise BeyondBPError(f"unlocked {self.label} needs a step for each segment: train with beyondbp.Trainer, "
                                f"or call method.connect(step_segment=...) after attach()")
        self.find_read_out(model, x)
        s = self.signal_before_pass(t, index)
        if self.execution == "forward" and self.sequence is not None:
            y, loss = self._forward_step(*self.sequence, x, t, s, objective)
        else:
            y, loss = self._hooked_step(model, x, t, index, s, objective)
        if self.signal is not None and self.execution == "forward":
            self.signal.after_pass(y, t, index, objective, self.buffer)
        return StepResult(y, loss.detach())

    def _forward_step(self, hidden_blocks, head, x, t, s, objective) -> tuple[Tensor, Tensor]:
        """Block by block: each block's gradient as soon as its output exists, then its graph is freed."""
        if self.unlocked:
            for p in (p for block in hidden_blocks for p in block.parameters()):
                p.grad = None  # only the current block may carry a gradient when it is stepped
        h = self.forward_blocks(hidden_blocks, x, s)
        y = head(h)
        loss = objective(y, t)
        loss.backward()
        return y.detach(), loss

    def signal_before_pass(self, t: Tensor, index: Tensor | None) -> Tensor | None:
        """The signal that hidden blocks receive, if it exists before the forward pass (centred with
        ``center_signal``); None for DFA's current error and for shallow learning."""
        s = self.signal.before_pass(t, index, self.buffer) if self.signal else None
        return signal_of(s, t, self.options.center_signal) if s is not None else None

    def forward_blocks(self, blocks: Sequence[nn.Module], h: Tensor, s: Tensor | None, first: int = 0,
                       deliver: Callable[[Tensor], None] | None = None) -> Tensor:
        """Hidden blocks ``first, first + 1, …`` (``B_first`` onwards) in forward execution: each block's
        gradient from ``s @ B_i`` as soon as its output exists, then ``after_block`` (unlocked); returns the
        last block's detached output. A pipeline stage (:mod:`beyondbp.pipeline`) runs its share of the
        blocks through here and passes ``deliver`` (its send to the next stage): the last output goes to
        ``deliver`` first and every block's gradient is formed after it, so the next stage starts a batch's
        forward pass before this one updates. The gradients and steps are the same either way: a block's
        step changes no output of the batch that caused it."""
        updates = []
        for i, block in enumerate(blocks, start=first):
            h, update = self._forward_block(i, block, h, s)
            if deliver is None:
                update()
            else:
                updates.append(update)
        if deliver is not None:
            deliver(h)
            for update in updates:
                update()
        return h

    def stage_pass(self, blocks: Sequence[nn.Module], h: Tensor, t: Tensor, index: Tensor | None, first: int,
                   deliver: Callable[[Tensor], None] | None = None, head: nn.Module | None = None,
                   objective: Objective | None = None) -> Tensor | None:
        """One pipeline stage's share of a training step (F³ paper, Sec. 3.3): the signal known before the pass,
        hidden blocks ``first, …`` through :meth:`forward_blocks`, and, on the last stage (which holds the
        ``head``), the loss, its backward and the signal's write for the next epoch; returns that loss. An
        earlier stage returns None and advances the delayed buffer's clock by the rows the last stage writes."""
        s = self.signal_before_pass(t, index)
        h = self.forward_blocks(blocks, h, s, first=first, deliver=deliver)
        if head is None:
            if self.buffer is not None:
                self.buffer.advance(len(t))
            return None
        y = head(h)
        loss = objective(y, t)
        loss.backward()
        if self.signal is not None:
            self.signal.after_pass(y.detach(), t, index, objective, self.buffer)
        return loss.detach()

    def delayed_state(self) -> list[Tensor]:
        """The delayed buffer's tensors (none without a buffer), in place: what pipeline stages share."""
        return list(self.buffer.state_dict().values()) if self.buffer is not None else []

    def _forward_block(self, i: int, block: nn.Module, h: Tensor,
                       s: Tensor | None) -> tuple[Tensor, Callable[[], None]]:
        """Block ``i``'s detached output and what forms its gradient from ``s @ B_i`` and steps it (nothing
        without a signal). ``B_i`` is drawn here, so matrices are drawn in block order either way."""
        parts = linear_block(block) if s is not None else None
        if parts is not None:  # Linear + activation: the update in place, without autograd
            x, out = local_forward(parts, h)
            b = self._matrix(i, out)
            gradient = lambda: local_gradient(parts, x, out, self.injected(s, b, out))
        else:
            with torch.set_grad_enabled(s is not None):
                out = block(h)
            if s is None or not out.requires_grad:
                return out.detach(), lambda: None
            b = self._matrix(i, out)
            gradient = lambda: out.backward(self.injected(s, b, out))

        def update() -> None:
            gradient()
            self._drop_excluded(block.parameters())
            if self.after_block is not None:
                self.after_block(list(block.parameters()))

        return out.detach(), update

    def _hooked_step(self, model, x, t, index, s, objective) -> tuple[Tensor, Tensor]:
        """Any model: its forward pass with the points' outputs detached. In forward execution each
        point's segment gets its gradient inside the hook; otherwise, after the forward pass and the
        loss's backward, one backward per point, last first (no chain from segment to segment)."""
        points = self.points
        points.resolve(x)
        if self.unlocked:
            for p in model.parameters():
                p.grad = None  # only the segment just updated may carry a gradient when it is stepped
        outputs: list[Tensor] = []
        head_inputs: list[Tensor] = []

        def at_point(i: int, h: Tensor) -> Tensor:
            if self.execution == "forward":
                self._inject(i, h, s)
            else:
                outputs.append(h)
            if self.from_head and i == len(points.names) - 1:
                head_inputs.append(h.detach().requires_grad_())
                return head_inputs[-1]
            return h.detach()

        with points.hooked(at_point):
            y = model(x)
        points.check_all_ran()
        loss = objective(y, t)
        if self.signal is not None and self.execution != "forward":
            current = self.signal.after_pass(y.detach(), t, index, objective, self.buffer)
            if s is None and current is not None:  # DFA's error exists only now
                s = signal_of(current, t, self.options.center_signal)
        if self.from_head and s is not None:
            s = self._through_head(y, head_inputs[-1], s)
        segments = [points.segment(i, h) for i, h in enumerate(outputs)]
        torch.autograd.backward(loss, inputs=points.segment(len(points.names), loss))
        if s is not None:  # the matrices are drawn in point order, then the injections run last first
            matrices = [self._matrix(i, h) for i, h in enumerate(outputs)]
            for h, b, params in reversed(list(zip(outputs, matrices, segments))):
                if h.requires_grad:
                    torch.autograd.backward(h, self.injected(s, b, h), inputs=params)
                self._drop_excluded(params)
        return y.detach(), loss

    def _through_head(self, y: Tensor, head_input: Tensor, s: Tensor) -> Tensor:
        """``J_headᵀ s``: the signal over the outputs carried back to the head's input (``feedback_from``
        head-input), checked to be one row per sample (per token for a signal per token)."""
        if not head_input.requires_grad or not y.requires_grad:
            raise UnsupportedModelError(f"{self.label}: feedback_from head-input needs a head with a path from the "
                                        f"last feedback point '{self.points.names[-1]}' to the output")
        carried = torch.autograd.grad(y, head_input, grad_outputs=s.to(y.dtype), retain_graph=True)[0]
        if carried.dim() != s.dim() or carried.shape[:-1] != s.shape[:-1]:
            raise UnsupportedModelError(f"{self.label}: feedback_from head-input needs the head's input "
                                        f"(the output of '{self.points.names[-1]}') shaped like the signal but for "
                                        f"its width, {list(s.shape[:-1])} + [width]; got {list(carried.shape)}")
        self.head_width = carried.shape[-1]
        return carried.detach()

    def _inject(self, i: int, h: Tensor, s: Tensor | None) -> None:
        """Forward execution in a hook: point ``i``'s segment gets its gradient from ``s @ B_i`` now."""
        params = self.points.segment(i, h)
        if s is not None and h.requires_grad:
            torch.autograd.backward(h, self.injected(s, self._matrix(i, h), h), inputs=params)
            self._drop_excluded(params)
            if self.after_block is not None:
                self.after_block(params)

    def _drop_excluded(self, params) -> None:
        """``feedback_exclude``: the excluded parameters of a hidden block lose the gradient just formed."""
        for p in params:
            if id(p) in self.excluded:
                p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "feedback": self.feedback,
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
            "read_out": None if self.read_out is None else vars(self.read_out),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.feedback = state["feedback"]
        read_out = state.get("read_out")
        self.read_out = None if read_out is None else ReadOut(**read_out)
        if (state["buffer"] is None) != (self.buffer is None):
            raise ValueError(f"checkpoint and method '{self.label}' disagree on having a delayed buffer")
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
