"""Layer-wise feedback: in the backward chain, each weight layer's ``Wᵀ`` is replaced by a feedback path.

For ``y = x Wᵀ + b`` backprop sends ``δ_x = δ_y W`` to the layer below; these methods send
``δ_x = δ_y F`` with a feedback matrix ``F`` of W's shape (or a product of factors). The
weight gradient ``δ_yᵀ x`` and everything else (activations, the loss) stay exact.
``Conv2d`` layers work the same way with W as the ``out × in·k·k`` matrix: the input
gradient is the transposed convolution with ``F`` in place of ``W``. The query, key, value
and output projections of ``nn.MultiheadAttention`` are layers too (:mod:`.attention`), and
so is Hugging Face's ``Conv1D`` (GPT-2's ``y = x W + b``, a Linear with its weight stored
transposed).

Modules with their own parameters that no rule covers keep their exact backward where no
weight transport is involved: normalisation and lookups (:data:`PASS_THROUGH`, and classes
named ``*Norm*``, ``*Embedding*`` or ``*PositionBias*``, such as ViT's and BERT's embeddings
with their class token and positions, which are added or looked up, and Swin's relative
position bias table). Modules whose own parameters are all vectors (ConvNeXt's layer scale, a
gate, a learned query) keep theirs too, as a norm's affine weights do, with a warning that
names them. Any other such module is refused by name
unless the user declares it exact (``exact_modules``, ``--exact-modules NAME,...``): inside a
declared module, every layer keeps its true backward.

- ``fa``: ``F = B`` fixed and random (Lillicrap et al. 2016, Eq. 1).
- ``usf``, ``frsf``, ``brsf``: sign-concordant feedback ``F = sign(W) ⊙ M`` (Liao, Leibo &
  Poggio 2016; Moskovitz et al. 2018; biotorch's names): uniform magnitude (``M`` = the
  mean ``|W|``), fixed random magnitude (``M = |R|``, drawn once) or batchwise random
  magnitude (``|R|`` redrawn every step); ``R`` is drawn like the feedback init.
- ``ldfa``: low-dimensional feedback ``F = P Q`` of rank r, applied as ``(δ_y P) Q``
  (Hanut & Kadmon 2025), P, Q initialised from W's truncated SVD and learned after every
  step with their own learning rate, by the normative rule ``∇P = (PQ − W)Qᵀ,
  ∇Q = Pᵀ(PQ − W)`` or the local rule ``∇P = (δᵀx)Qᵀ, ∇Q = (δP)ᵀx``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BeyondBPError, UnsupportedModelError
from ..models.vit import PositionEmbedding
from ..objectives import Objective
from ..options import Section, option
from .attention import Projection, attention_forward, projections
from .base import Method, StepResult
from .feedback_init import FeedbackMatrixOptions, feedback_matrix
from .points import check_point_names

#: Modules with parameters that need no weight transport (elementwise, normalising or additive, or
#: a lookup whose input takes no gradient): they keep their exact backward.
PASS_THROUGH = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, PositionEmbedding, nn.Embedding)
#: Class names of other libraries' normalisation and embedding modules, which keep their exact backward.
EXACT_BY_NAME = re.compile(r"Norm|Embedding|PositionBias")
SUPPORTED = (nn.Linear, nn.Conv2d)
EXACT_GROUP = "layer-wise feedback (fa, usf, frsf, brsf, ldfa)"


@dataclass
class ExactModulesOptions(Section):
    """Modules in which a layer-wise method keeps the true backward (declared by the user)."""

    exact_modules: tuple[str, ...] = option((), EXACT_GROUP, "modules that keep their exact backward, e.g. "
                                                             "embeddings,encoder.norm", metavar="NAMES")


@dataclass
class LayerwiseOptions(FeedbackMatrixOptions, ExactModulesOptions):
    """fa's and sign symmetry's options: their feedback matrices, and the modules kept exact."""


class TransposedLinear:
    """A layer computing ``x W + b`` with ``W`` stored ``in × out`` (Hugging Face's ``Conv1D``), seen as a
    ``Linear`` whose weight is ``Wᵀ``."""

    def __init__(self, module: nn.Module):
        self.module = module

    @property
    def weight(self) -> Tensor:
        return self.module.weight.T

    @property
    def bias(self) -> Tensor | None:
        return self.module.bias


def is_transposed_linear(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (``transformers.pytorch_utils``), recognised without importing it."""
    return (type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers")
            and getattr(module, "weight", None) is not None and module.weight.dim() == 2)


def keeps_exact_backward(module: nn.Module) -> bool:
    return isinstance(module, PASS_THROUGH) or EXACT_BY_NAME.search(type(module).__name__) is not None


def elementwise_only(module: nn.Module) -> bool:
    """Whether all of ``module``'s own parameters are vectors (scales, shifts, gates, a query)."""
    return all(p.dim() <= 1 for p in module.parameters(recurse=False))


class _LinearWithFeedback(torch.autograd.Function):
    """``F.linear`` whose backward sends ``grad_output @ F_1 @ F_2 ...`` to the input.

    ``record`` (a dict or None) receives the layer's weight gradient ``δᵀx`` for rules that need it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, record: dict | None, *factors: Tensor) -> Tensor:
        ctx.save_for_backward(x, *factors)
        ctx.has_bias, ctx.record = bias is not None, record
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, *factors = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output
            for factor in factors:
                grad_x = grad_x @ factor
        grad_2d = grad_output.reshape(-1, grad_output.shape[-1])
        grad_weight = grad_2d.T @ x.reshape(-1, x.shape[-1])
        if ctx.record is not None:
            ctx.record["weight_grad"] = grad_weight
        grad_bias = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return (grad_x, grad_weight if ctx.needs_input_grad[1] else None, grad_bias, None,
                *(None for _ in factors))


class _Conv2dWithFeedback(torch.autograd.Function):
    """``F.conv2d`` whose backward sends the transposed convolution with ``feedback`` (W's shape) to the input."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, record: dict | None, geometry: tuple,
                feedback: Tensor) -> Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias, ctx.record, ctx.geometry, ctx.weight_shape = bias is not None, record, geometry, weight.shape
        return F.conv2d(x, weight, bias, *geometry)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, feedback = ctx.saved_tensors
        grad_x = (torch.nn.grad.conv2d_input(x.shape, feedback, grad_output, *ctx.geometry)
                  if ctx.needs_input_grad[0] else None)
        grad_weight = torch.nn.grad.conv2d_weight(x, ctx.weight_shape, grad_output, *ctx.geometry)
        if ctx.record is not None:
            ctx.record["weight_grad"] = grad_weight.flatten(1)
        grad_bias = grad_output.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight if ctx.needs_input_grad[1] else None, grad_bias, None, None, None


def _layer_forward(module: nn.Module | Projection, factors: tuple[Tensor, ...], record: dict | None,
                   x: Tensor) -> Tensor:
    if isinstance(module, (nn.Linear, Projection, TransposedLinear)):
        return _LinearWithFeedback.apply(x, module.weight, module.bias, record, *factors)
    feedback = (factors[0] if len(factors) == 1 else torch.linalg.multi_dot(factors)).view_as(module.weight)
    geometry = (module.stride, module.padding, module.dilation, module.groups)
    return _Conv2dWithFeedback.apply(x, module.weight, module.bias, record, geometry, feedback)


def weight_matrix(layer: nn.Module) -> Tensor:
    """The layer's weight as a matrix: ``out × in`` (Linear) or ``out × in·k·k`` (Conv2d), detached."""
    return layer.weight.detach().flatten(1)


class LayerwiseFeedback(Method):
    """Base class: collects the ``Linear`` layers and patches their backward during :meth:`step`.

    Subclasses say how each layer's feedback is formed (:meth:`init_layer`,
    :meth:`factors`) and may learn it after the backward pass (:meth:`after_backward`).
    """

    def __init__(self, options: FeedbackMatrixOptions | None = None, exact_modules: tuple[str, ...] = ()):
        self.options = options if options is not None else FeedbackMatrixOptions()
        self.exact_modules = tuple(getattr(self.options, "exact_modules", exact_modules))
        self.layers: dict[str, nn.Module | Projection | TransposedLinear] = {}
        self.attentions: list[nn.MultiheadAttention] = []

    def prepare(self, model: nn.Module) -> None:
        """Collect the layers and draw fresh feedback; the per-layer dicts that :meth:`state_dict` names
        are emptied first, so attaching again starts anew."""
        for key in self.state_dict():
            setattr(self, key, {})
        self.layers, self.attentions = {}, []
        exact = check_point_names(model, self.exact_modules, self.name, "exact module")
        elementwise = []
        for name, module in model.named_modules():
            if any(name == e or name.startswith(e + ".") for e in exact):
                continue
            if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
                raise UnsupportedModelError(f"{self.name} cannot handle layer '{name}': padding '{module.padding}' "
                                            f"given as a string; give it in pixels")
            if isinstance(module, SUPPORTED):
                self.layers[name] = module
            elif is_transposed_linear(module):
                self.layers[name] = TransposedLinear(module)
            elif isinstance(module, nn.MultiheadAttention):
                self.layers.update(projections(name, module))
                self.attentions.append(module)
            elif not list(module.parameters(recurse=False)) or keeps_exact_backward(module):
                continue
            elif elementwise_only(module):
                elementwise.append(name)
            else:
                raise UnsupportedModelError(
                    f"{self.name} cannot handle layer '{name}' ({type(module).__name__}); it supports Linear, "
                    f"Conv2d, MultiheadAttention and Conv1D layers; to keep its exact backward: "
                    f"--exact-modules {name} (Python: exact_modules=['{name}'])"
                )
        if elementwise:
            warnings.warn(f"{self.name} keeps the exact backward of {len(elementwise)} module(s) whose own "
                          f"parameters are vectors, as it keeps a norm's affine weights: "
                          f"{', '.join(elementwise[:3])}{', ...' if len(elementwise) > 3 else ''}", stacklevel=3)
        for name, layer in self.layers.items():
            self.init_layer(name, layer)

    def random_matrix(self, layer: nn.Module) -> Tensor:
        out_features, in_features = weight_matrix(layer).shape
        matrix = feedback_matrix(self.options.feedback_init, out_features, in_features, self.options.normalize)
        return matrix.to(layer.weight.device)

    def init_layer(self, name: str, layer: nn.Module) -> None:
        """Create the layer's feedback state."""

    def factors(self, name: str, layer: nn.Module) -> tuple[Tensor, ...]:
        """The matrices whose product replaces ``W`` in ``δ_x = δ_y W``."""
        raise NotImplementedError

    def records(self) -> dict[str, dict] | None:
        """Per layer, a dict that receives the weight gradient in the backward pass (None: not needed)."""
        return None

    def after_backward(self, records: dict[str, dict] | None) -> None:
        """Learn the feedback once the gradients exist."""

    @contextmanager
    def _feedback_paths(self, records: dict[str, dict] | None) -> Iterator[None]:
        paths = {name: partial(_layer_forward, layer, self.factors(name, layer),
                               records[name] if records is not None else None)
                 for name, layer in self.layers.items()}
        modules = {name: layer.module if isinstance(layer, TransposedLinear) else layer
                   for name, layer in self.layers.items() if not isinstance(layer, Projection)}
        patched = list(modules.values()) + self.attentions
        for name, module in modules.items():
            module.forward = paths[name]
        for attention in self.attentions:
            project = {p.which: paths[name] for name, p in self.layers.items()
                       if isinstance(p, Projection) and p.attention is attention}
            attention.forward = partial(attention_forward, attention, project)
        try:
            yield
        finally:
            for module in patched:
                del module.forward

    def compute(self, model: nn.Module, x: Tensor, t: Tensor, index: Tensor | None,
                objective: Objective) -> StepResult:
        records = self.records()
        with self._feedback_paths(records):
            output = model(x)
        loss = objective(output, t)
        loss.backward()
        self.after_backward(records)
        return StepResult(output.detach(), loss.detach())


class FeedbackAlignment(LayerwiseFeedback):
    """FA: a fixed random ``B`` of W's shape per layer."""

    name = "fa"

    def __init__(self, options: LayerwiseOptions | None = None):
        super().__init__(options if options is not None else LayerwiseOptions())
        self.feedback: dict[str, Tensor] = {}

    def init_layer(self, name: str, layer: nn.Module) -> None:
        self.feedback[name] = self.random_matrix(layer)

    def factors(self, name: str, layer: nn.Module) -> tuple[Tensor, ...]:
        return (self.feedback[name],)

    def state_dict(self) -> dict[str, Any]:
        return {"feedback": dict(self.feedback)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["feedback"]) != set(self.layers):
            raise ValueError("checkpoint's feedback matrices do not match the model's Linear layers")
        self.feedback = dict(state["feedback"])


SIGN_SYMMETRY = {"usf": "uniform", "frsf": "fixed random", "brsf": "batchwise random"}


class SignSymmetry(LayerwiseFeedback):
    """Sign-concordant feedback ``sign(W) ⊙ M``; ``variant`` is ``usf``, ``frsf`` or ``brsf``."""

    def __init__(self, variant: str, options: LayerwiseOptions | None = None):
        if variant not in SIGN_SYMMETRY:
            raise BeyondBPError(f"unknown sign-symmetry variant '{variant}'; known: {', '.join(SIGN_SYMMETRY)}")
        super().__init__(options if options is not None else LayerwiseOptions())
        self.name = variant
        self.magnitudes: dict[str, Tensor] = {}

    def init_layer(self, name: str, layer: nn.Module) -> None:
        if self.name == "frsf":
            self.magnitudes[name] = self.random_matrix(layer).abs()

    def factors(self, name: str, layer: nn.Module) -> tuple[Tensor, ...]:
        w = weight_matrix(layer)
        if self.name == "usf":
            return (w.sign() * w.abs().mean(),)
        magnitude = self.magnitudes[name] if self.name == "frsf" else self.random_matrix(layer).abs()
        return (w.sign() * magnitude,)

    def state_dict(self) -> dict[str, Any]:
        return {"magnitudes": dict(self.magnitudes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.magnitudes = dict(state["magnitudes"])


FEEDBACK_RULES = ("normative", "local")
LDFA_GROUP = "low-dimensional feedback (ldfa)"


@dataclass
class LowRankFeedbackOptions(ExactModulesOptions):
    """LDFA's options (Hanut & Kadmon 2025): the rank of ``P Q`` and how it learns."""

    rank: int = option(10, LDFA_GROUP, "rank r of the feedback P Q")
    feedback_rule: str = option("normative", LDFA_GROUP, "normative or local", choices=FEEDBACK_RULES)
    feedback_lr: float = option(1e-3, LDFA_GROUP, "learning rate of P and Q")

    def check(self) -> None:
        super().check()
        if self.rank < 1:
            raise BeyondBPError(f"ldfa needs rank >= 1, got {self.rank}")
        if self.feedback_lr < 0:
            raise BeyondBPError(f"the feedback learning rate must be >= 0, got {self.feedback_lr}")


class LowRankFeedback(LayerwiseFeedback):
    """LDFA: rank-``rank`` feedback ``P Q`` per layer, learned by ``feedback_rule`` with step size
    ``feedback_lr`` (:class:`LowRankFeedbackOptions`, or its fields as keywords)."""

    name = "ldfa"

    def __init__(self, options: LowRankFeedbackOptions | None = None, **settings: Any):
        options = options if options is not None else LowRankFeedbackOptions(**settings)
        super().__init__(exact_modules=options.exact_modules)
        self.rank, self.rule, self.feedback_lr = options.rank, options.feedback_rule, options.feedback_lr
        self.p: dict[str, Tensor] = {}
        self.q: dict[str, Tensor] = {}

    @property
    def label(self) -> str:
        return f"ldfa:r{self.rank}-{self.rule}"

    def init_layer(self, name: str, layer: nn.Module) -> None:
        """``P = U_r S_r^½``, ``Q = S_r^½ V_rᵀ``: ``P Q`` is W's best rank-r approximation."""
        u, s, vh = torch.linalg.svd(weight_matrix(layer), full_matrices=False)
        r = min(self.rank, len(s))
        root = s[:r].sqrt()
        self.p[name] = u[:, :r] * root
        self.q[name] = root[:, None] * vh[:r]

    def factors(self, name: str, layer: nn.Module) -> tuple[Tensor, ...]:
        return self.p[name], self.q[name]

    def records(self) -> dict[str, dict] | None:
        return {name: {} for name in self.layers} if self.rule == "local" else None

    def after_backward(self, records: dict[str, dict] | None) -> None:
        for name, layer in self.layers.items():
            p, q = self.p[name], self.q[name]
            if self.rule == "normative":
                direction = p @ q - weight_matrix(layer)
            elif "weight_grad" in records[name]:
                direction = records[name]["weight_grad"]
            else:
                continue  # the layer took no part in this backward pass
            grad_p, grad_q = direction @ q.T, p.T @ direction
            p -= self.feedback_lr * grad_p
            q -= self.feedback_lr * grad_q

    def state_dict(self) -> dict[str, Any]:
        return {"p": dict(self.p), "q": dict(self.q)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.q = dict(state["p"]), dict(state["q"])
