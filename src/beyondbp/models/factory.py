"""A user's own model: ``--model FILE.py:FUNCTION`` or ``--model package.module:FUNCTION``.

The factory is called as ``FUNCTION(input_shape, num_outputs)``: ``input_shape`` is one
sample's shape without the batch dimension (``(1, 28, 28)`` for Fashion-MNIST, ``(10,)``
for a table of 10 features) and ``num_outputs`` the number of classes or regression
targets. It returns an ``nn.Module`` whose output is ``[batch, num_outputs]`` scores
(logits), or an object holding them (a dict, tuple or Hugging Face ``ModelOutput``: see
:mod:`.outputs`); the loss's output activation (the sigmoid of ``bce``) is appended by beyondbp:
as a last child of an ``nn.Sequential``, else by a forward hook on the model, so module
names (and feedback points) stay the user's.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from ..errors import BeyondBPError
from .outputs import select_output


def is_factory(spec: str) -> bool:
    """Whether a ``--model`` value names a factory (``FILE.py:FUNCTION`` or ``module:FUNCTION``)."""
    return ":" in spec


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The function named by ``spec``, or an error that says what is wrong with it."""
    where, _, function = spec.rpartition(":")
    if not where or not function:
        raise BeyondBPError(f"model factory '{spec}': expected FILE.py:FUNCTION or package.module:FUNCTION")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise BeyondBPError(f"model factory '{spec}': file {path} does not exist")
        name = f"beyondbp_user_model_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:  # the user's file: report it in one line
            raise BeyondBPError(f"model factory '{spec}': importing {path} failed: "
                                f"{type(error).__name__}: {error}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as error:
            raise BeyondBPError(f"model factory '{spec}': cannot import module '{where}': {error}") from None
    if not hasattr(module, function):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise BeyondBPError(f"model factory '{spec}': {where} has no '{function}'; callables there: "
                            f"{', '.join(found) or 'none'}")
    factory = getattr(module, function)
    if isinstance(factory, nn.Module):  # one instance would be trained by every run that builds it
        raise BeyondBPError(f"model factory '{spec}': '{function}' is a built {type(factory).__name__}; give a "
                            f"function that builds a fresh one: def {function}(input_shape, num_outputs): return ...")
    if not callable(factory):
        raise BeyondBPError(f"model factory '{spec}': '{function}' is a {type(factory).__name__}, not callable")
    return factory


def build_user_model(spec: str, input_shape: Sequence[int], num_outputs: int,
                     output_activation: nn.Module, output_key: str | None = None) -> nn.Module:
    """Call the factory, choose the tensor of its output (:mod:`.outputs`) and append ``output_activation``
    (see the module docstring)."""
    factory = load_factory(spec)
    try:
        model = factory(tuple(input_shape), num_outputs)
    except Exception as error:
        raise BeyondBPError(f"model factory '{spec}' failed for input shape {tuple(input_shape)} and "
                            f"{num_outputs} outputs: {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise BeyondBPError(f"model factory '{spec}' returned a {type(model).__name__}, not a torch.nn.Module")
    return with_output_activation(select_output(model, output_key), output_activation)


def with_output_activation(model: nn.Module, activation: nn.Module) -> nn.Module:
    """``model`` followed by ``activation`` (nothing for ``nn.Identity``), keeping its module names."""
    if isinstance(activation, nn.Identity):
        return model
    if isinstance(model, nn.Sequential):
        model.append(activation)
        return model
    model.add_module("output_activation", activation)
    model.register_forward_hook(lambda module, inputs, output: module.output_activation(output))
    return model
