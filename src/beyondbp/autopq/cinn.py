"""The conditional invertible network ``z = f(y; c)`` of AutoPQ (Phipps et al. 2024; Meisenbacher et al. 2024).

Ten conditional affine coupling blocks of GLOW type (Kingma & Dhariwal 2018), each followed by a fixed
random permutation, built with FrEIA (Ardizzone et al.); every coupling subnet is
``Linear(·, 32) – tanh – Linear(32, ·)`` with the scale clamped at 0.5, and the conditions pass first
through a small conditioning net ``Linear(n_c, 8) – tanh – Linear(8, 4)`` trained with it. Training
maximises the likelihood of the true targets under a standard normal latent:

    loss = mean(z²) / 2 − mean(log |det ∂f/∂y|) / D

with Adam (lr 5e-4, weight decay 1e-5), gradients clipped at norm 1, batch 512, and a random 20% of
the training windows held out. The authors keep the last epoch's weights (``keep="last"``); ``keep="best"``
(ours) keeps those of the epoch with the lowest held-out loss. As in the
authors' code, every parameter of the coupling blocks starts as ``0.01 · N(0, 1)`` (so the untrained flow is
close to the identity); the conditioning net keeps PyTorch's initialisation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import DivergenceError


@dataclass(frozen=True)
class CINNSettings:
    """The authors' network and training settings (see the module docstring)."""

    blocks: int = 10
    subnet_width: int = 32
    clamp: float = 0.5
    condition_hidden: int = 8
    condition_width: int = 4
    epochs: int = 100
    batch_size: int = 512
    lr: float = 5e-4
    weight_decay: float = 1e-5
    clip_norm: float = 1.0
    held_out: float = 0.2
    init_std: float | None = 0.01  # coupling parameters ~ init_std · N(0, 1); None: PyTorch's initialisation
    keep: str = "last"  # the weights kept: the last epoch's (the authors') or the best held-out epoch's


class ConditionalINN(nn.Module):
    """``forward(y, c) -> (z, log|det ∂z/∂y|)`` and ``inverse(z, c) -> y`` for targets of ``dim`` values."""

    def __init__(self, dim: int, num_conditions: int, settings: CINNSettings = CINNSettings(), seed: int = 0):
        super().__init__()
        import FrEIA.framework as ff
        import FrEIA.modules as fm

        def subnet(inputs: int, outputs: int) -> nn.Module:
            return nn.Sequential(nn.Linear(inputs, settings.subnet_width), nn.Tanh(),
                                 nn.Linear(settings.subnet_width, outputs))

        self.dim = dim
        self.condition_net = nn.Sequential(nn.Linear(num_conditions, settings.condition_hidden), nn.Tanh(),
                                           nn.Linear(settings.condition_hidden, settings.condition_width))
        condition = ff.ConditionNode(settings.condition_width, name="condition")
        nodes = [ff.InputNode(dim, name="y")]
        for block in range(settings.blocks):
            nodes.append(ff.Node(nodes[-1], fm.GLOWCouplingBlock,
                                 {"subnet_constructor": subnet, "clamp": settings.clamp}, conditions=condition,
                                 name=f"coupling{block}"))
            nodes.append(ff.Node(nodes[-1], fm.PermuteRandom, {"seed": seed * 1000 + block}, name=f"permute{block}"))
        self.flow = ff.GraphINN([*nodes, ff.OutputNode(nodes[-1], name="z"), condition], verbose=False)
        if settings.init_std is not None:
            with torch.no_grad():
                for p in self.flow.parameters():
                    if p.requires_grad:
                        p.normal_(0.0, settings.init_std)

    def forward(self, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        z, log_det = self.flow(y, c=[self.condition_net(c)])
        return z, log_det

    def inverse(self, z: Tensor, c: Tensor) -> Tensor:
        y, _ = self.flow(z, c=[self.condition_net(c)], rev=True)
        return y


def negative_log_likelihood(z: Tensor, log_det: Tensor) -> Tensor:
    """``mean(z²)/2 − mean(log|det|)/D``: the per-dimension negative log-likelihood up to a constant."""
    return z.pow(2).mean() / 2 - log_det.mean() / z.shape[1]


def train_cinn(c: np.ndarray, y: np.ndarray, settings: CINNSettings = CINNSettings(), seed: int = 0,
               device: str | torch.device = "cpu", progress: bool = True) -> tuple[ConditionalINN, list[dict]]:
    """Fit a :class:`ConditionalINN` to windows ``(c, y)`` by maximum likelihood; returns it (with the weights
    ``settings.keep`` names, in eval mode) and one record per epoch."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ConditionalINN(y.shape[1], c.shape[1], settings, seed).to(device)
    c_all, y_all = torch.as_tensor(c, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    order = torch.randperm(len(y_all), generator=generator)
    held = order[: max(1, int(round(settings.held_out * len(order))))]
    fit = order[len(held):]
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    best, best_state, history = float("inf"), None, []
    for epoch in tqdm(range(1, settings.epochs + 1), desc="cINN", disable=None if progress else True, leave=False):
        net.train()
        total = 0.0
        for batch in fit[torch.randperm(len(fit), generator=generator)].split(settings.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = negative_log_likelihood(*net(y_all[batch].to(device), c_all[batch].to(device)))
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), settings.clip_norm)
            optimizer.step()
            total += loss.item() * len(batch)
        net.eval()
        with torch.no_grad():
            held_loss = negative_log_likelihood(*net(y_all[held].to(device), c_all[held].to(device))).item()
        history.append({"epoch": epoch, "train_nll": total / len(fit), "held_out_nll": held_loss})
        if held_loss < best:
            best, best_state = held_loss, copy.deepcopy(net.state_dict())
    if best_state is None or (settings.keep == "last" and not np.isfinite(history[-1]["held_out_nll"])):
        raise DivergenceError("cINN training diverged: the held-out likelihood is not finite; "
                              "try a smaller learning rate")
    if settings.keep == "best":
        net.load_state_dict(best_state)
    return net.eval(), history
