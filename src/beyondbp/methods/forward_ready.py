"""Forward-mode differentiation (``torch.func.jvp``) through the layers of real models.

Some of torch's fastest kernels have no forward-mode derivative: fused attention
(``scaled_dot_product_attention``'s flash and memory-efficient paths), oneDNN's and cuDNN's recurrent layers.
Batch norm in training mode updates its running statistics in place, which a function transform refuses
(the buffers are captured tensors). :func:`forward_ready` runs a step where each has a path that works: the
math path of attention, recurrent layers without oneDNN/cuDNN (only for models that have one), and batch norms
that normalise with the batch's statistics without recording them; :func:`record_batch_statistics` then
updates the running statistics with one ordinary forward pass, as a step of backprop would have. What still
has no forward-mode derivative is refused by name in one line.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import UnsupportedModelError

NORMS = (nn.modules.batchnorm._BatchNorm,)


def tracking_norms(model: nn.Module) -> list[nn.Module]:
    """The batch norms that would update running statistics in this forward pass."""
    return [m for m in model.modules() if isinstance(m, NORMS) and m.training and m.track_running_stats]


@contextmanager
def forward_ready(model: nn.Module, label: str) -> Iterator[None]:
    """Within: forward-mode AD through ``model`` (see the module docstring); errors of a kernel without it
    become one line naming the operation."""
    norms = tracking_norms(model)
    with warnings.catch_warnings(), ExitStack() as stack:
        warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN")  # set by the flags below
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        if any(isinstance(m, nn.RNNBase) for m in model.modules()):
            stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        for norm in norms:
            norm.track_running_stats = False
        try:
            yield
        except NotImplementedError as error:
            found = re.search(r"forward AD with (\S+)", str(error))
            if found is None:
                raise
            raise UnsupportedModelError(f"{label}: torch has no forward-mode derivative of {found.group(1)}, which "
                                        f"this model uses; replace that layer, or use a method that does not "
                                        f"need forward-mode AD") from None
        finally:
            for norm in norms:
                norm.track_running_stats = True


@torch.no_grad()
def record_batch_statistics(model: nn.Module, x: Tensor) -> None:
    """Update the running statistics of the model's batch norms with the batch ``x`` (one forward pass),
    when it has any that track them."""
    if tracking_norms(model):
        model(x)
