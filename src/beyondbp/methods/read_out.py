"""Which token positions a model's read-out uses: where direct feedback on token sequences belongs.

A classifier on a token sequence reads some positions of its last hidden block: a ViT or BERT the class
token (position 0), a mean-pooled encoder all of them, GPT-2's sequence classifier the last. The output's
error belongs to the positions read, so a direct signal projected to a point's output ``[batch, T, width]``
enters those positions, split equally among them (``token_feedback="read-out"``): the class token's position
alone gets ``s @ B_i``; a read-out of all positions gives each ``s @ B_i / T``, which is the ``"shared"``
form. This is the form of the true gradient at the last hidden block behind a linear read-out of those
positions, applied at every point; Launay et al. (2020, "Direct Feedback Alignment Scales to Modern Deep
Learning Tasks and Architectures") likewise give each token the error of its own output.

The positions are found once, by one probe: a forward pass in eval mode (no dropout drawn, no running
statistics moved) that makes the last point's output a leaf, then the gradient of the outputs' sum with
respect to it. A position is read when its gradient is not zero. A head whose weights are all zero gives no
gradient anywhere and is taken to read every position.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.outputs import replace_output_tensor


def read_positions(model: nn.Module, point: nn.Module, x: Tensor, where: str) -> Tensor | None:
    """The weight of each token position of ``point``'s output in the direct signal: ``1/k`` at the ``k``
    positions ``model``'s output depends on, 0 elsewhere; None when the output is no token sequence
    (``[batch, T, width]``) or every position is read (then every token gets ``1/T``)."""
    leaves: list[Tensor] = []

    def keep(h: Tensor) -> Tensor:
        leaf = h.detach().requires_grad_()
        leaves.append(leaf)
        return leaf

    handle = point.register_forward_hook(lambda module, inputs, output: replace_output_tensor(output, keep, where))
    training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            y = model(x)
    finally:
        handle.remove()
        model.train(training)
    h = leaves[0]
    if h.dim() != 3:
        return None
    (gradient,) = torch.autograd.grad(y.sum(), h, allow_unused=True)
    if gradient is None:
        return None
    read = gradient.abs().sum(dim=(0, 2)) > 0
    if read.all() or not read.any():
        return None
    return read.to(h.dtype) / read.sum()
