"""The local update of a ``Linear`` + activation block, computed in place (forward execution).

For a block ``h = φ(W x + b)`` that receives ``g = ∂L/∂h`` (direct feedback), the weight
gradients are ``δ = g ⊙ φ'(h)``, ``∂L/∂W = δᵀ x`` and ``∂L/∂b = Σ_samples δ`` (sums over samples and
tokens; Nøkland 2016,
Eq. 3; F³ paper, Sec. 3.3). For tanh, sigmoid, ReLU and leaky ReLU, ``φ'`` is a function of the
output ``h``, so nothing but the input and the output needs to be kept. Here ``δ`` overwrites
``g`` a few rows at a time and ``δᵀ x`` is added straight into ``W.grad`` (``addmm_``): at most
the input, the output and ``g`` are alive, three activation-sized tensors, where autograd
holds five (it also keeps the gradient through the activation and a fresh weight gradient
before adding it). The gradients are the same as autograd's (a test compares them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Rows of ``g`` multiplied by ``φ'(h)`` at a time: bounds the temporary to ``ROWS × width``.
ROWS = 64


def _derivative(activation: nn.Module, y: Tensor) -> Tensor:
    """``φ'`` expressed through the output ``y = φ(z)``."""
    if isinstance(activation, nn.Tanh):
        return 1 - y * y
    if isinstance(activation, nn.Sigmoid):
        return y * (1 - y)
    slope = activation.negative_slope if isinstance(activation, nn.LeakyReLU) else 0.0
    return torch.where(y > 0, 1.0, slope).to(y.dtype)


def _activate_(activation: nn.Module, z: Tensor) -> Tensor:
    if isinstance(activation, nn.Tanh):
        return z.tanh_()
    if isinstance(activation, nn.Sigmoid):
        return z.sigmoid_()
    if isinstance(activation, nn.LeakyReLU):
        return F.leaky_relu_(z, activation.negative_slope)
    return z.relu_()


ACTIVATIONS = (nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU)


def linear_block(block: nn.Module) -> tuple[bool, nn.Linear, nn.Module] | None:
    """``(flattens, linear, activation)`` for a block ``[Flatten,] Linear, activation`` whose
    parameters all train and that has no hooks (they would not run), else None (such blocks
    take the autograd path)."""
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
           for m in block.modules()):
        return None
    parts = list(block) if isinstance(block, nn.Sequential) else [block]
    flattens = bool(parts) and isinstance(parts[0], nn.Flatten) and parts[0].start_dim == 1
    parts = parts[1:] if flattens else parts
    if len(parts) != 2 or type(parts[0]) is not nn.Linear or type(parts[1]) not in ACTIVATIONS:
        return None
    linear = parts[0]
    if not all(p.requires_grad for p in linear.parameters()):
        return None
    return flattens, linear, parts[1]


def local_forward(parts: tuple[bool, nn.Linear, nn.Module], x: Tensor) -> tuple[Tensor, Tensor]:
    """The block on ``x`` without autograd: ``(x as the Linear sees it, the output h)``."""
    flattens, linear, activation = parts
    with torch.no_grad():
        x = x.flatten(1) if flattens else x
        return x, _activate_(activation, F.linear(x, linear.weight, linear.bias))


def local_gradient(parts: tuple[bool, nn.Linear, nn.Module], x: Tensor, y: Tensor, g: Tensor) -> None:
    """Add the weight gradients for ``g`` (the gradient injected at the output ``y``, overwritten here
    by ``δ``) into ``.grad``; ``x`` is the input as :func:`local_forward` returned it."""
    _, linear, activation = parts
    with torch.no_grad():
        g = g.reshape(y.shape)
        for g_rows, y_rows in zip(g.split(ROWS), y.split(ROWS)):
            g_rows.mul_(_derivative(activation, y_rows))
        g, x = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # tokens count as samples
        weight = linear.weight
        if weight.grad is None:
            weight.grad = (g.T @ x).to(weight.dtype)  # under bf16 autocast the product is bf16
        elif g.dtype == weight.dtype:
            weight.grad.addmm_(g.T, x)
        else:
            weight.grad.add_((g.T @ x).to(weight.dtype))
        bias = linear.bias
        if bias is not None:
            bias.grad = g.sum(0).to(bias.dtype) if bias.grad is None else bias.grad.add_(g.sum(0))
