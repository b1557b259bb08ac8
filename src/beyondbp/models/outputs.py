"""Which tensor of a model's output is meant: models from other libraries return objects, not tensors.

A Hugging Face model returns a ``ModelOutput`` (a dict with attributes), other models a dict, a tuple or a
named tuple. The rule, applied by :func:`select_output` with ``key=None``: a tensor is itself; otherwise the
element named ``logits`` if there is one, else the first tensor (in the order of a tuple, or of a dict's
keys; ``None`` entries are skipped). ``key`` names another element (a dict key or a named tuple's field).

:func:`select_output` installs this choice as a forward hook on the model, run before any other, so module
names, feedback points and checkpoints stay the model's own; :class:`~beyondbp.train.Trainer`, every method's
``attach`` and the evaluation install the default rule on a model that has none.

The same rule serves a feedback point whose module returns an object (an attention block's ``(output,
weights)``, ``nn.LSTM``'s ``(output, (h, c))``): :func:`replace_output_tensor` gives the signal to the chosen
tensor and passes the rest through untouched.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from ..errors import UnsupportedModelError

#: The element preferred when no key is given.
DEFAULT_KEY = "logits"

_selected: weakref.WeakKeyDictionary[nn.Module, tuple[Any, str | None]] = weakref.WeakKeyDictionary()


def _named_elements(output: Any) -> list[tuple[str, Any]] | None:
    """``(name, value)`` of a dict-like or named-tuple output; None for other outputs."""
    if isinstance(output, Mapping):
        return list(output.items())
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return list(zip(output._fields, output))
    return None


def _describe(output: Any) -> str:
    named = _named_elements(output)
    if named is not None:
        return f"{type(output).__name__} with {', '.join(name for name, _ in named) or 'no elements'}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {', '.join(type(v).__name__ for v in output)}"
    return type(output).__name__


def output_position(output: Any, key: str | None = None, where: str = "the model") -> str | int | None:
    """Where the chosen tensor sits in ``output``: a name, a position, or None for a tensor itself."""
    if isinstance(output, Tensor):
        if key is not None:
            raise UnsupportedModelError(f"output key '{key}' given, but {where} returns a tensor")
        return None
    named = _named_elements(output)
    if key is not None:
        if named is None or key not in dict(named) or not isinstance(dict(named)[key], Tensor):
            found = [n for n, v in named if isinstance(v, Tensor)] if named is not None else []
            raise UnsupportedModelError(f"output key '{key}' is not a tensor that {where} returns ("
                                        f"{_describe(output)}); its tensors: {', '.join(found) or 'none by name'}")
        return key
    if named is not None:
        tensors = [n for n, v in named if isinstance(v, Tensor)]
        if DEFAULT_KEY in tensors:
            return DEFAULT_KEY
        if tensors:
            return tensors[0]
    elif isinstance(output, (tuple, list)):
        for position, value in enumerate(output):
            if isinstance(value, Tensor):
                return position
    raise UnsupportedModelError(f"{where} returns {_describe(output)}: no tensor in it to train on")


def output_tensor(output: Any, key: str | None = None, where: str = "the model") -> Tensor:
    """The tensor that ``output`` means (see the module docstring)."""
    position = output_position(output, key, where)
    if position is None:
        return output
    return getattr(output, position) if isinstance(position, str) and not isinstance(output, Mapping) \
        else output[position]


def replace_output_tensor(output: Any, change: Callable[[Tensor], Tensor], where: str) -> Any:
    """``output`` with its chosen tensor ``h`` replaced by ``change(h)``, everything else as it was."""
    position = output_position(output, None, where)
    if position is None:
        return change(output)
    if isinstance(output, Mapping):
        changed = copy.copy(output)  # a ModelOutput stays one (its item and attribute both change)
        changed[position] = change(output[position])
        return changed
    if isinstance(position, str):  # a named tuple
        return output._replace(**{position: change(getattr(output, position))})
    values = list(output)
    values[position] = change(values[position])
    return type(output)(values)


def select_output(model: nn.Module, key: str | None = None) -> nn.Module:
    """Make ``model(x)`` return the tensor its output means (``key``: a named element); returns ``model``.
    Calling it again replaces the choice."""
    previous = _selected.get(model)
    if previous is not None:
        previous[0].remove()
    handle = model.register_forward_hook(lambda module, inputs, output: output_tensor(output, key), prepend=True)
    _selected[model] = (handle, key)
    return model


def ensure_output(model: nn.Module) -> nn.Module:
    """:func:`select_output` with the default rule, unless a choice was made already."""
    return model if model in _selected else select_output(model)
