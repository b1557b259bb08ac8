"""Initialisations of fixed random feedback matrices.

A feedback matrix ``B`` of shape ``(rows, cols)`` maps a ``rows``-dimensional signal to
a ``cols``-dimensional gradient: ``δ = s @ B``. For direct feedback ``rows`` is the number
of outputs C and ``cols`` the width of the block receiving the signal; for feedback
alignment ``B`` has the shape of the weight W (out × in) it stands in for. The
initialisations follow those of the F³ paper (Flügel et al. 2023, Sec. 4):
kaiming-uniform, trinomial {-1, 0, 1}, binomial {0, 1} and ±identity repeated.
Matrices are drawn on the CPU from PyTorch's global generator, so a seed gives the same
matrices on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..options import Section, option
from ..registry import Registry

FEEDBACK_INITS: Registry[Callable[[int, int], Tensor]] = Registry("feedback init")


@FEEDBACK_INITS.register("kaiming_uniform", "U(-1/sqrt(cols), 1/sqrt(cols)): PyTorch's Linear init, fan_in = cols")
def kaiming_uniform(rows: int, cols: int) -> Tensor:
    # kaiming_uniform with a = sqrt(5): bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in)
    bound = 1.0 / math.sqrt(cols)
    return torch.empty(rows, cols).uniform_(-bound, bound)


def _discrete_uniform(values: tuple[float, ...], rows: int, cols: int) -> Tensor:
    choice = torch.randint(len(values), (rows, cols))
    return torch.tensor(values)[choice]


@FEEDBACK_INITS.register("trinomial", "entries drawn uniformly from {-1, 0, 1}")
def trinomial(rows: int, cols: int) -> Tensor:
    return _discrete_uniform((-1.0, 0.0, 1.0), rows, cols)


@FEEDBACK_INITS.register("binomial", "entries drawn uniformly from {0, 1}")
def binomial(rows: int, cols: int) -> Tensor:
    return _discrete_uniform((0.0, 1.0), rows, cols)


@FEEDBACK_INITS.register("identity_pm", "[I, -I, I, -I, ...] along the columns: unit j gets +-s[j mod rows]")
def identity_pm(rows: int, cols: int) -> Tensor:
    """Deterministic: column ``j`` is ``+e_r`` for ``j mod 2·rows = r < rows`` and ``-e_r``
    for ``j mod 2·rows = rows + r``."""
    period = torch.arange(cols) % (2 * rows)
    matrix = torch.zeros(rows, cols)
    matrix[period % rows, torch.arange(cols)] = torch.where(period < rows, 1.0, -1.0)
    return matrix


def feedback_matrix(init: str, rows: int, cols: int, normalize: bool = False) -> Tensor:
    """A ``rows × cols`` feedback matrix; ``normalize`` divides it by ``sqrt(cols)``, the width
    of the layer that receives the feedback (DFA's width normalisation, Launay et al. 2019)."""
    matrix = FEEDBACK_INITS.get(init)(rows, cols)
    return matrix / math.sqrt(cols) if normalize else matrix


@dataclass
class FeedbackMatrixOptions(Section):
    """Options of fixed random feedback matrices, shared by layer-wise (fa, sign symmetry) and direct
    feedback (dfa, drtp, f3)."""

    feedback_init: str = option("kaiming_uniform", "feedback matrices", "initialisation of feedback matrices; see "
                                                                         "'beyondbp list'")
    normalize: bool = option(False, "feedback matrices", "divide feedback matrices by sqrt(width)",
                             flat="feedback_normalize")

    def check(self) -> None:
        super().check()
        FEEDBACK_INITS.get(self.feedback_init)
