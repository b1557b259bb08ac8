"""Registries of model constructors and activation functions."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence

from torch import nn

from ..errors import BeyondBPError
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Sequential]] = Registry("model")

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("tanh", "hyperbolic tangent (F³ paper)")(nn.Tanh)
ACTIVATIONS.register("relu", "rectified linear unit")(nn.ReLU)
ACTIVATIONS.register("leaky_relu", "leaky ReLU, slope 0.01")(nn.LeakyReLU)
ACTIVATIONS.register("sigmoid", "logistic sigmoid")(nn.Sigmoid)
ACTIVATIONS.register("gelu", "Gaussian error linear unit (transformers)")(nn.GELU)


def activation(name: str) -> nn.Module:
    """A new activation module by name (``tanh``, ``relu``, ``leaky_relu``, ``sigmoid``)."""
    return ACTIVATIONS.get(name)()


def _parameters(constructor: Callable) -> list[tuple[str, type]]:
    return [(k, v) for k, v in typing.get_type_hints(constructor).items() if k not in ("return", "output_activation")]


def model_settings(name: str) -> list[str]:
    """The settings the model called ``name`` reads (its keywords and the fields of its groups of options)."""
    names = []
    for parameter, hint in _parameters(MODELS.get(name))[2:]:  # after input_shape and num_outputs
        names += [f.name for f in dataclasses.fields(hint)] if dataclasses.is_dataclass(hint) else [parameter]
    return names


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_outputs: int,
    output_activation: nn.Module,
    **options,
) -> nn.Sequential:
    """Build the model called ``name`` for inputs of ``input_shape`` (without the batch dimension).

    ``options`` may hold settings of every model (``hidden``, ``channels``, ``depth``, ...); each
    model takes those it knows, as keywords or as fields of a dataclass argument. A size that does not
    fit the input is a :class:`BeyondBPError`.
    """
    constructor = MODELS.get(name)
    given = {k: v for k, v in options.items() if v is not None}
    arguments = {}
    for parameter, hint in _parameters(constructor):
        if dataclasses.is_dataclass(hint):  # a group of options (e.g. TransformerShape), built from its fields
            arguments[parameter] = hint(**{f.name: given[f.name] for f in dataclasses.fields(hint) if f.name in given})
        elif parameter in given:
            arguments[parameter] = given[parameter]
    try:
        return constructor(input_shape, num_outputs, output_activation=output_activation, **arguments)
    except ValueError as error:
        raise BeyondBPError(f"model '{name}': {error}") from None
