"""Which positions a model's read-out uses: where direct feedback on token sequences and feature maps belongs.

A classifier on a token sequence reads some positions of its last hidden block: a ViT or BERT the class
token (position 0), a mean-pooled encoder all of them, GPT-2's sequence classifier the last. The output's
error belongs to the positions read, so a direct signal projected to a point's output ``[batch, T, width]``
by a C × width matrix ``B_i`` enters those positions, split equally among them (``token_feedback="read-out"``):
the class token's position alone gets ``s @ B_i``; a read-out of all positions gives each ``s @ B_i / T``
(the ``"shared"`` form). This is the form of the true gradient at the last hidden block behind a linear
read-out of those positions, applied at every point; Launay et al. (2020, "Direct Feedback Alignment Scales
to Modern Deep Learning Tasks and Architectures") likewise give each token the error of its own output.

A convolutional network whose read-out averages its last feature map over space (a global average pool:
ResNets, VGG with batch norm) gets the same at every position: ``B_i`` is C × channels and every position
of a point's map ``[batch, channels, H, W]`` receives ``s @ B_i / (H W)``, the form of the true gradient
behind the pool. A read-out that weighs positions differently (flatten, then a linear layer) keeps one
feedback value per element, ``B_i`` of C × (channels · H · W), as Nøkland (2016) feeds back to conv layers.

The read-out is found once, by one probe: a forward pass in eval mode (no dropout drawn, no running
statistics moved) that makes the last point's output a leaf, then the gradient of the outputs' sum with
respect to it. A token position is read when its gradient is not zero; a feature map is pooled when its
gradient is the same at every position of each sample and channel. A head whose weights are all zero gives
no gradient anywhere and is taken to read every token (and not to pool). A read-out that moves with the
sample (GPT-2's last token that is not padding) is probed on two samples and gets the positions either
reads: give ``--token-feedback shared`` or choose such a model's points yourself if that matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.outputs import replace_output_tensor


@dataclass(frozen=True)
class ReadOut:
    """What the probe found: ``weights`` of the token positions (``1/k`` at the ``k`` read, 0 elsewhere; None:
    every token alike, ``1/T``), and whether feature maps are ``pooled`` (one value for every position)."""

    weights: Tensor | None = None
    pooled: bool = False


def probe_read_out(model: nn.Module, point: nn.Module, x: Tensor, where: str) -> ReadOut:
    """How ``model``'s output reads the output of its last feedback ``point`` on the samples ``x``."""
    leaves: list[Tensor] = []

    def keep(h: Tensor) -> Tensor:
        leaf = h.detach().requires_grad_()
        leaves.append(leaf)
        return leaf

    handle = point.register_forward_hook(lambda module, inputs, output: replace_output_tensor(output, keep, where))
    modes = [(module, module.training) for module in model.modules()]  # a frozen batch norm stays in eval
    model.eval()
    try:
        with torch.enable_grad():
            y = model(x)
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
    h = leaves[0]
    if h.dim() not in (3, 4):
        return ReadOut()
    (gradient,) = torch.autograd.grad(y.sum(), h, allow_unused=True)
    if gradient is None or not gradient.any():
        return ReadOut()
    if h.dim() == 4:
        return ReadOut(pooled=bool((gradient == gradient[:, :, :1, :1]).all()))
    read = gradient.abs().sum(dim=(0, 2)) > 0
    return ReadOut() if read.all() else ReadOut(weights=read.to(h.dtype) / read.sum())
