"""Low-rank surgery shared by OIALR (:mod:`.lowrank`) and AB-training (:mod:`.ab_training`).

Both replace eligible layers by factored ones while a model trains, and both must keep the
optimizer consistent with the parameters that change shape. The three pieces:

- :func:`eligible_layers`: the layers of the given types whose weight matrix (``out × in``, a
  convolution's kernel as ``out × in·kh·kw``) has both sides at least ``min_size``, the output
  layer (the model's last ``Linear``) left at full rank;
- :func:`replace_module`: put a module in place of the one called ``name``;
- :func:`transform_state`: carry a parameter's optimizer state through a change of basis or
  shape: first moments and momentum by a linear map, Adam's second moments by the map of the
  squares (its entries are elementwise squares); a parameter whose state cannot follow is
  given a fresh state by :func:`forget_state`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

#: Optimizer state entries that transform like the parameter (Adam's ``exp_avg``, SGD's momentum)
#: and like its elementwise square (Adam's ``exp_avg_sq``, ``max_exp_avg_sq``).
LINEAR_STATE = ("exp_avg", "momentum_buffer")
QUADRATIC_STATE = ("exp_avg_sq", "max_exp_avg_sq")


def eligible_layers(model: nn.Module, types: tuple[type, ...], min_size: int, keep_output_full: bool = True,
                    accept: Callable[[nn.Module], bool] = lambda module: True) -> list[str]:
    """Names of the layers of ``types`` (that ``accept`` takes) with both sides of their weight matrix
    >= ``min_size``; with ``keep_output_full`` the last of them is left out when it is a ``Linear``
    (the output layer)."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, types) and accept(m)]
    if keep_output_full and layers and isinstance(layers[-1][1], nn.Linear):
        layers = layers[:-1]
    return [name for name, m in layers if min(m.weight.shape[0], m.weight[0].numel()) >= min_size]


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Set the submodule called ``name`` (dotted) to ``module``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def transform_state(optimizer: torch.optim.Optimizer, param: nn.Parameter,
                    linear: Callable[[Tensor], Tensor], quadratic: Callable[[Tensor], Tensor]) -> None:
    """Apply ``linear`` to the parameter's first-moment state and ``quadratic`` to its second moments."""
    state = optimizer.state.get(param, {})
    for key in LINEAR_STATE:
        if isinstance(state.get(key), Tensor):
            state[key] = linear(state[key])
    for key in QUADRATIC_STATE:
        if isinstance(state.get(key), Tensor):
            state[key] = quadratic(state[key])


def forget_state(optimizer: torch.optim.Optimizer, *params: nn.Parameter) -> None:
    """Drop the parameters' optimizer state: the next step starts it afresh for their new shape."""
    for param in params:
        optimizer.state.pop(param, None)
