"""Feedback points: where a direct signal enters any ``nn.Module``, and which parameters each one trains.

A direct-feedback method (DFA, DRTP, F³, shallow) or activity-perturbed forward gradient
needs three facts about a model: the modules ``p_1 .. p_K`` at whose outputs the signal
enters, that no gradient crosses a point backwards, and that the parameters after ``p_K``
get the loss's true gradient. Forward hooks give all three without touching the user's
``forward``: at ``p_i`` the hook keeps the output ``h_i`` and hands the rest of the model
``h_i.detach()``.

Which gradient every trainable parameter ``θ`` receives: let ``p_i`` be the *first* point
whose output depends on ``θ`` (found once, by walking the autograd graph back from each
``h_i`` in the order the points run). Then ``θ`` gets ``(∂h_i/∂θ)ᵀ (s B_i)``, the injected
signal back-propagated inside its own segment only; a parameter on which no point depends
gets the true ``∂L/∂θ`` through the part of the model after the last point. Each backward
is restricted to its segment's parameters (``inputs=``), so a residual skip that bypasses
a point carries nothing across it.

Worked example, a residual block ``r = relu(x + conv2(relu(conv1(x))))`` after a stem
``x = stem(input)``, with points ``["stem", "block"]`` and a head ``y = fc(pool(r))``:
the stem's parameters get ``(∂x/∂θ)ᵀ s B_1``; conv1 and conv2 get ``(∂r/∂θ)ᵀ s B_2``
(the skip ``x + ...`` inside the block changes nothing: ``x`` is the stem's detached
output); fc gets ``∂L/∂θ``. With the points ``["block"]`` alone, the stem belongs to the
block's segment and gets ``(∂r/∂θ)ᵀ s B_1`` through both the convolutions and the skip.

Default points, by rule, not by model name: (1) an ``nn.Sequential`` model: its children in
order, a point closing every child that is followed by one with weights to train, so
parameter-free children (activations, pooling, flattening) and normalisation layers join the
block before them (for the library's models, every block but the last); (2) any other model
that holds stacks of blocks (a ``ModuleList`` or ``Sequential`` inside it of at least two
blocks of one class, each a module with parts and weights: ``encoder.layer.N`` of BERT and
ViT, ``h.N`` of GPT-2, ``layers.N``, a ResNet's ``layerK.N``): every block, in running
order, unless the blocks are pre-norm (the first module with parameters that runs inside each
is a normalisation layer: ViT, GPT-2), where the rule ``norms`` below chooses the points;
(3) otherwise the model's children in the order they run, as in (1).

The rule ``norms`` (``--feedback-points norms``, when no module is called so): every normalisation layer
with parameters (``LayerNorm``, ``GroupNorm``, batch norms, and other libraries' classes named ``*Norm``)
that runs once, in running order; the default for models whose stacks hold pre-norm blocks. In a
transformer these outputs are the normalised residual stream: in a post-norm block the block's output and
the sum after attention, in a pre-norm block the input of each sublayer and the final norm before the head.
Direct feedback that enters there trains a pre-norm transformer far better than feedback into the
unnormalised residual stream at the blocks' outputs (NOTES.md, "Language models"; Launay et al. 2020 fed
back after the norms of post-norm blocks).

A point's module may return an object (an attention block's tuple, ``nn.LSTM``'s ``(output,
(h, c))``, a ``ModelOutput``): the signal enters the tensor :mod:`beyondbp.models.outputs`
chooses (the first) and the rest passes through untouched.

A parameter owned by two modules (tied input embedding and output head) receives the sum of
what each of its owners' segments gives it: the feedback of the segment of the embedding
plus the head's true gradient. A module that runs more than once in a forward pass is
refused by name, and so are shared parameters where each segment steps on its own
(unlocked updates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from ..models.outputs import replace_output_tensor
from ..options import Section, option

#: Layers with parameters that do not start a new block in the default points (they normalise
#: the block before them).
NORMALISATION = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d)


#: Rules that ``feedback_points`` may name instead of modules (see the module docstring).
POINT_RULES = ("norms",)


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer: torch's, or another library's class named ``*Norm`` (``LlamaRMSNorm``)."""
    return isinstance(module, NORMALISATION) or type(module).__name__.endswith("Norm")


def trains(module: nn.Module) -> bool:
    """Whether the module has trainable parameters that are weights, not only a normalisation."""
    if isinstance(module, NORMALISATION):
        return False
    return any(p.requires_grad for p in module.parameters())


def default_points(children: Sequence[tuple[str, nn.Module]]) -> list[str]:
    """Names of the children (in running order) that close a block: followed by a child with weights,
    and preceded (since the last point) by one with trainable parameters."""
    points, pending = [], False
    for (name, child), (_, following) in zip(children, children[1:]):
        pending = pending or any(p.requires_grad for p in child.parameters())
        if pending and trains(following):
            points.append(name)
            pending = False
    return points


def block_lists(model: nn.Module) -> list[str]:
    """The blocks of the model's stacks (rule 2 of the module docstring), by name, outermost stacks only."""
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        if any(name.startswith(block + ".") for block in found):
            continue
        children = list(module.named_children())
        kinds = {type(child) for _, child in children}
        if len(children) >= 2 and len(kinds) == 1 and all(
                next(child.children(), None) is not None and trains(child) for _, child in children):
            found += [f"{name}.{child}" for child, _ in children]
    return found


def running_once(order: Sequence[str], candidates: Sequence[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The candidates that ran exactly once in a pass whose modules ran in ``order``, in running order."""
    modules = dict(candidates)
    return [(name, modules[name]) for name in order if name in modules and order.count(name) == 1]


def pre_norm(blocks: Sequence[str], order: Sequence[str], norms: set[str]) -> bool:
    """Whether every block is pre-norm (``x + f(LN(x))``): the first module with parameters that runs inside
    it, in a pass whose modules ran in ``order``, is one of the ``norms``."""
    def first_inside(block: str) -> str | None:
        return next((name for name in order if name.startswith(block + ".")), None)
    return all(first_inside(block) in norms for block in blocks)


def shared_parameters(model: nn.Module) -> dict[int, list[str]]:
    """Parameters owned by more than one module: ``{id: [their names]}``."""
    owners: dict[int, list[str]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{module_name}.{name}" if module_name else name)
    return {key: names for key, names in owners.items() if len(names) > 1}


def module_names(model: nn.Module, limit: int = 40) -> str:
    """The model's module names, for error messages (the first ``limit``)."""
    names = [name for name, _ in model.named_modules() if name]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_point_names(model: nn.Module, names: Sequence[str], method: str, what: str = "feedback point") -> list[str]:
    """``names`` as a list, after checking that each names a module of ``model`` exactly once."""
    modules = dict(model.named_modules())
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UnsupportedModelError(f"{method}: {what} '{name}' is given twice")
        seen.add(name)
        if not name or name not in modules:
            raise UnsupportedModelError(f"{method}: {what} '{name}' is not a module of the model; "
                                        f"its modules are: {module_names(model)}")
    return list(names)


def reachable_parameters(root: Tensor) -> set[int]:
    """The ids of the leaf tensors (parameters) that ``root``'s autograd graph reaches."""
    found: set[int] = set()
    seen: set = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.add(id(variable))
        stack.extend(following for following, _ in node.next_functions)
    return found


class FeedbackPoints:
    """The feedback points of one model: their names, hooks for one forward pass, and the segments.

    Args:
        model: any ``nn.Module``.
        names: module names; None chooses the default points (see the module docstring) at the
            first forward pass.
        method: the method's label, for error messages.
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | None, method: str):
        self.model = model
        self.method = method
        modules = dict(model.named_modules())
        #: A rule of :data:`POINT_RULES` that chooses the points at the first pass, or None.
        self.rule = names[0] if names is not None and len(names) == 1 and names[0] in POINT_RULES \
            and names[0] not in modules else None
        names = None if self.rule else names
        self.names: list[str] | None = None if names is None else check_point_names(model, names, method)
        if self.names is None and self.rule is None and isinstance(model, nn.Sequential):
            self.names = default_points(list(model.named_children()))
        #: Parameters owned by several modules (``{id: names}``): every segment that reaches one trains it.
        self.shared = shared_parameters(model)
        #: Per point, then for the part after the last point: the parameters it trains (found at the
        #: first pass; the graph is assumed to keep its structure from batch to batch).
        self.segments: list[list[nn.Parameter]] | None = None
        #: Points whose hook has run in the current forward pass.
        self.fired = 0

    def resolve(self, x: Tensor) -> list[str]:
        """The point names, running the model once without gradients on ``x`` when the defaults depend
        on the order in which its children run."""
        if self.names is None:
            modules = dict(self.model.named_modules())
            blocks = [] if self.rule else block_lists(self.model)
            norms = [(name, m) for name, m in modules.items()
                     if is_norm(m) and any(p.requires_grad for p in m.parameters())]
            candidates = norms if self.rule == "norms" else \
                [(name, modules[name]) for name in blocks] or list(self.model.named_children())
            order = self._running_order(x, candidates + norms)
            once = running_once(order, candidates)
            if blocks and not self.shared and pre_norm(blocks, order, set(dict(norms))):
                self.rule, once = "norms", running_once(order, norms)
            self.names = [name for name, _ in once] if blocks or self.rule else default_points(once)
        if not self.names:
            example = next((name for name, m in self.model.named_modules() if name and trains(m)), "layer1")
            raise UnsupportedModelError(f"{self.method}: the model has no feedback point (no child with weights "
                                        f"follows another); name the modules where the signal enters, e.g. "
                                        f"--feedback-points {example} (Python: feedback_points=['{example}'])")
        return self.names

    def _running_order(self, x: Tensor, watched: list[tuple[str, nn.Module]]) -> list[str]:
        """The names of the ``watched`` modules and of every module that owns parameters, in the order they
        start running in one forward pass of ``x`` (without gradients); a module that runs twice is listed twice."""
        order: list[str] = []
        owners = [(name, m) for name, m in self.model.named_modules() if next(m.parameters(False), None) is not None]
        handles = [module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
                   for name, module in dict(watched + owners).items()]
        try:
            with torch.no_grad():
                self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return order

    @contextmanager
    def hooked(self, at_point: Callable[[int, Tensor], Tensor]) -> Iterator[None]:
        """Within the block, point ``i``'s output ``h`` is replaced by ``at_point(i, h)`` in the forward pass.

        Refuses a point that runs twice or whose output holds no tensor, naming it.
        """
        modules = dict(self.model.named_modules())
        self.fired = 0

        def hook(i: int, module: nn.Module, inputs, output):
            name = self.names[i]
            if i < self.fired:
                raise UnsupportedModelError(f"{self.method}: feedback point '{name}' runs more than once in a "
                                            f"forward pass (shared weights); choose modules that run once")
            if i > self.fired:
                raise UnsupportedModelError(f"{self.method}: feedback point '{name}' ran before "
                                            f"'{self.names[self.fired]}'; list the points in the order they run")
            self.fired += 1
            where = f"{self.method}: feedback point '{name}' ({type(module).__name__})"
            return replace_output_tensor(output, lambda h: at_point(i, h), where)

        handles = [modules[name].register_forward_hook(lambda m, a, o, i=i: hook(i, m, a, o))
                   for i, name in enumerate(self.names)]
        if self.segments is None:  # first pass: refuse shared weights before segments are formed
            runs: dict[str, int] = {}

            def count(name: str, module: nn.Module, inputs) -> None:
                runs[name] = runs.get(name, 0) + 1
                if runs[name] > 1:
                    raise UnsupportedModelError(f"{self.method}: module '{name}' ({type(module).__name__}) runs more "
                                                f"than once in a forward pass (shared weights), which direct "
                                                f"feedback cannot assign to one segment")

            handles += [module.register_forward_pre_hook(lambda m, a, name=name: count(name, m, a))
                        for name, module in modules.items() if next(module.parameters(recurse=False), None) is not None]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def check_all_ran(self) -> None:
        """After a forward pass in :meth:`hooked`: refuse points that did not run."""
        if self.fired < len(self.names):
            raise UnsupportedModelError(f"{self.method}: feedback point '{self.names[self.fired]}' did not run in "
                                        f"the forward pass; choose modules that the model's forward calls")

    def _check_shared_cut(self, i: int, part: list[nn.Parameter], reached: set[int], taken: set[int]) -> None:
        """Refuse a shared parameter in a segment whose root reaches parameters of earlier segments: the points
        do not cut the graph there (points at the norms of a residual stream), so the gradient it would get
        for the parameter mixes backpropagation through those segments into its feedback."""
        shared = [p for p in part if id(p) in self.shared]
        if shared and reached & taken:
            where = f"feedback point '{self.names[i]}'" if i < len(self.names) else "the loss"
            raise UnsupportedModelError(
                f"{self.method}: the parameter {' = '.join(self.shared[id(shared[0])])} is shared, and {where} "
                f"reaches it past the points before it (the points {','.join(self.names)} do not cut the graph: a "
                f"residual stream runs around them), so its gradient would mix backpropagation into the "
                f"feedback; choose points that cut the stream (the blocks, the default for models with shared "
                f"weights) or untie the weights")

    def segment(self, i: int, root: Tensor) -> list[nn.Parameter]:
        """The parameters that point ``i`` (or, with ``i == len(names)``, the loss) trains, given its
        output ``root``; found by walking the graph the first time (points in running order)."""
        if self.segments is None:
            self.segments = []
        if i == len(self.segments):
            taken = {id(p) for part in self.segments for p in part} - set(self.shared)
            reached = reachable_parameters(root) if root.requires_grad else set()
            part = [p for p in self.model.parameters() if p.requires_grad and id(p) in reached and id(p) not in taken]
            if i < len(self.names) and not part:
                raise UnsupportedModelError(f"{self.method}: feedback point '{self.names[i]}' trains no parameter "
                                            f"(no trainable parameter between it and the point before); "
                                            f"drop it or choose another module")
            if i == len(self.names) and not part:
                raise UnsupportedModelError(f"{self.method}: no trainable parameter after the last feedback point "
                                            f"'{self.names[-1]}'; the output layer must come after it")
            self._check_shared_cut(i, part, reached, taken)
            self.segments.append(part)
        return self.segments[i]


@dataclass
class PointOptions(Section):
    """Where a signal enters the model: direct feedback, and forward gradients with activity tangents."""

    feedback_points: tuple[str, ...] = option((), "feedback points", "module names where the signal enters, e.g. "
                                                                       "layer1,layer2.1 (default: every block but "
                                                                       "the last), or norms: every normalisation "
                                                                       "layer", metavar="NAMES")

    @property
    def points(self) -> list[str] | None:
        """The names given, or None for the defaults."""
        return list(self.feedback_points) or None
