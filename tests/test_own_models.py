"""Every method on a user's own nn.Module and data: feedback points, DataLoaders, class-index labels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from beyondbp import Trainer, make_method, make_objective
from beyondbp.data import WithIndex
from beyondbp.errors import BeyondBPError, UnsupportedModelError
from beyondbp.methods.points import default_points
from beyondbp.streams import epoch_generator
from conftest import blobs

BCE = make_objective("bce", "classification")
DIRECT = ("dfa", "drtp", "f3", "shallow")


class ThreeLayers(nn.Module):
    """The same network as ``sequential()``, written as a subclass with its own forward."""

    def __init__(self):
        super().__init__()
        self.first = nn.Sequential(nn.Linear(5, 7), nn.Tanh())
        self.second = nn.Sequential(nn.Linear(7, 6), nn.Tanh())
        self.out = nn.Sequential(nn.Linear(6, 3), nn.Sigmoid())

    def forward(self, x):
        return self.out(self.second(self.first(x)))


def sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Linear(5, 7), nn.Tanh()), nn.Sequential(nn.Linear(7, 6), nn.Tanh()),
                         nn.Sequential(nn.Linear(6, 3), nn.Sigmoid()))


def subclass_like(model: nn.Sequential) -> ThreeLayers:
    other = ThreeLayers()
    other.load_state_dict({k.replace("0.", "first.", 1) if k.startswith("0.") else
                           k.replace("1.", "second.", 1) if k.startswith("1.") else k.replace("2.", "out.", 1): v
                           for k, v in model.state_dict().items()})
    return other


def batch(n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(3, (n,), generator=g), torch.arange(n)


def two_steps(model: nn.Module, spec: str, execution: str = "auto", labels: str = "index"):
    x, t, index = batch()
    if labels == "one-hot":
        t = nn.functional.one_hot(t, 3).float()
    method = make_method(spec, **({"execution": execution} if spec.partition(":")[0] in DIRECT else {}))
    method.attach(model, num_outputs=3, num_samples=8)
    torch.manual_seed(5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the second step sees the delayed signal of the first
        optimizer.zero_grad(set_to_none=True)
        method.step(model, x, t, index, BCE)
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        optimizer.step()
    return grads, method


@pytest.mark.parametrize("spec", ["f3", "f3:delayed_loss", "dfa", "drtp", "shallow"])
@pytest.mark.parametrize("execution", ["auto", "autograd"])
def test_a_subclass_gets_the_gradients_of_the_same_sequential(spec, execution):
    if spec == "dfa" and execution == "auto":
        execution = "autograd"
    reference = sequential()
    own = subclass_like(reference)
    expected, _ = two_steps(reference, spec, execution)
    got, method = two_steps(own, spec, execution)
    assert method.points.names == ["first", "second"]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    if spec != "shallow":
        assert all(g.abs().sum() > 0 for g in got)


@pytest.mark.parametrize("spec", ["f3", "dfa", "fa", "fg:k2-activities"])
def test_class_indices_and_one_hot_targets_give_the_same_gradients(spec):
    by_index, _ = two_steps(sequential(), spec, labels="index")
    torch.manual_seed(0)
    by_one_hot, _ = two_steps(sequential(), spec, labels="one-hot")
    for a, b in zip(by_index, by_one_hot):
        torch.testing.assert_close(a, b)


class Residual(nn.Module):
    """``r = tanh(x + W x + b)``: a residual block whose skip stays inside the module."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return torch.tanh(x + self.linear(x))


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
        self.block = Residual(3)
        self.head = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid())

    def forward(self, u):
        return self.head(self.block(self.stem(u)))


@pytest.mark.parametrize("points", [None, ["block"]])
def test_residual_block_gradients_equal_a_hand_computation(points):
    """DFA on stem -> residual block -> head. With the default points (stem, block) every segment gets
    s B_i through its own layers only; with the block alone, the stem's gradient passes through the
    block's linear layer and its skip: δ_x = δ_pre + δ_pre W."""
    model = ResidualNet()
    u = torch.tensor([[0.5, -1.0], [1.5, 0.3], [-0.7, 0.9]])
    labels = torch.tensor([0, 1, 1])
    t = nn.functional.one_hot(labels, 2).float()
    method = make_method("dfa", feedback_points=points)
    method.attach(model, num_outputs=2)
    torch.manual_seed(7)
    y = method.step(model, u, labels, None, BCE).output
    assert method.points.names == (points or ["stem", "block"])
    b_block = method.feedback[-1]

    w1, b1 = model.stem[0].weight.detach(), model.stem[0].bias.detach()
    w2, b2 = model.block.linear.weight.detach(), model.block.linear.bias.detach()
    h = torch.tanh(u @ w1.T + b1)
    r = torch.tanh(h + h @ w2.T + b2)
    s = t - y  # DFA's signal with a sigmoid output and BCE
    delta_pre = (s @ b_block) * (1 - r ** 2)
    torch.testing.assert_close(model.block.linear.weight.grad, delta_pre.T @ h)
    torch.testing.assert_close(model.block.linear.bias.grad, delta_pre.sum(0))
    if points is None:
        delta_h = s @ method.feedback[0]
    else:
        delta_h = delta_pre + delta_pre @ w2
    delta_stem = delta_h * (1 - h ** 2)
    torch.testing.assert_close(model.stem[0].weight.grad, delta_stem.T @ u)
    torch.testing.assert_close(model.stem[0].bias.grad, delta_stem.sum(0))
    # the head: the loss's true gradient
    exact = copy.deepcopy(model)
    exact.zero_grad()
    BCE(exact(u), t).backward()
    torch.testing.assert_close(model.head[0].weight.grad, exact.head[0].weight.grad)


class Bypass(nn.Module):
    """``pre = a(u)``; point ``mid``: ``h = tanh(b(pre))``; the skip ``pre`` reaches the head past ``mid``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a = nn.Linear(3, 4)
        self.mid = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(4, 2), nn.Sigmoid())

    def forward(self, u):
        pre = self.a(u)
        return self.head(self.mid(pre) + pre)


def test_no_gradient_crosses_a_point_through_a_skip():
    model = Bypass()
    u, labels = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1, 1])
    method = make_method("drtp", feedback_points=["mid"])
    method.attach(model, num_outputs=2)
    method.step(model, u, labels, None, BCE)
    # a's gradient: the injection at mid only, back through mid (not the loss through the skip)
    t = nn.functional.one_hot(labels, 2).float()
    h = model.mid(model.a(u))
    expected = torch.autograd.grad(h, model.a.weight, t @ method.feedback[0])[0]
    torch.testing.assert_close(model.a.weight.grad, expected)


def test_default_points_close_blocks_after_their_activation():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    assert default_points(list(flat.named_children())) == ["2", "4"]
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert default_points(list(conv.named_children())) == ["3"]


def test_a_flat_sequential_trains_with_dfa():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3), nn.Sigmoid())
    data = blobs()
    method = make_method("dfa")
    history = Trainer(model, method, torch.optim.Adam(model.parameters(), 1e-2), BCE, progress=False).fit(
        data.train, epochs=30, eval_set=data.test)
    assert method.points.names == ["1"]
    assert history[-1]["test_accuracy"] > 0.95


def test_bad_points_are_refused_by_name():
    model = ThreeLayers()
    with pytest.raises(UnsupportedModelError, match=r"'nope' is not a module of the model; its modules are: first, "):
        make_method("f3", feedback_points=["nope"]).attach(model, num_outputs=3, num_samples=8)
    with pytest.raises(UnsupportedModelError, match="'first' is given twice"):
        make_method("dfa", feedback_points=["first", "first"]).attach(model, num_outputs=3)
    x, t, index = batch()
    method = make_method("dfa", feedback_points=["second", "first"])
    method.attach(model, num_outputs=3)
    with pytest.raises(UnsupportedModelError, match="'first' ran before 'second'; list the points in the order"):
        method.step(model, x, t, index, BCE)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(5, 5), nn.Tanh())
        self.out = nn.Sequential(nn.Linear(5, 3), nn.Sigmoid())

    def forward(self, x):
        return self.out(self.layer(self.layer(x)))


class WithAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(5, 1, batch_first=True)
        self.out = nn.Sequential(nn.Flatten(), nn.Linear(5, 3), nn.Sigmoid())

    def forward(self, x):
        return self.out(self.attention(x[:, None], x[:, None], x[:, None])[0])


class Describes(nn.Module):
    """A module with weights whose output holds no tensor."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Linear(5, 1)

    def forward(self, x):
        return {"rows": len(x), "name": "batch"}


class WithDescription(nn.Module):
    def __init__(self):
        super().__init__()
        self.describe = Describes()
        self.out = nn.Sequential(nn.Linear(5, 3), nn.Sigmoid())

    def forward(self, x):
        self.describe(x)
        return self.out(x)


@pytest.mark.parametrize("model,message", [
    (Shared(), r"module 'layer.0' \(Linear\) runs more than once in a forward pass \(shared weights\)"),
    (WithDescription(), r"feedback point 'describe' \(Describes\) returns dict with rows, name: no tensor in it"),
])
def test_points_that_run_twice_or_hold_no_tensor_are_refused(model, message):
    x, t, index = batch()
    method = make_method("dfa", feedback_points=[next(model.named_children())[0]])
    method.attach(model, num_outputs=3)
    with pytest.raises(UnsupportedModelError, match=message):
        method.step(model, x, t, index, BCE)


def test_a_point_returning_a_tuple_takes_the_signal_in_its_first_tensor():
    """MultiheadAttention returns (output, weights): its projections get the feedback through the output."""
    x, t, index = batch()
    model = WithAttention()
    method = make_method("dfa", feedback_points=["attention"])
    method.attach(model, num_outputs=3)
    method.step(model, x, t, index, BCE)
    assert model.attention.in_proj_weight.grad.abs().sum() > 0 and model.out[1].weight.grad.abs().sum() > 0


def test_f3_without_sample_indices_names_the_remedy():
    model = ThreeLayers()
    x, t, _ = batch()
    method = make_method("f3")
    method.attach(model, num_outputs=3, num_samples=8)
    with pytest.raises(BeyondBPError, match=r"needs each sample's index.*WithIndex"):
        method.step(model, x, t, None, BCE)


@pytest.mark.parametrize("spec", ["fa", "frsf", "ldfa"])
def test_layerwise_methods_refuse_to_step_before_attach_and_start_afresh_when_attached_again(spec):
    model = sequential()
    x, t, index = batch()
    method = make_method(spec)
    with pytest.raises(BeyondBPError, match="before step"):
        method.step(model, x, t, index, BCE)
    method.attach(model, num_outputs=3)
    assert all(set(per_layer) == {"0.0", "1.0", "2.0"} for per_layer in method.state_dict().values())
    method.attach(nn.Sequential(nn.Linear(5, 3), nn.Sigmoid()), num_outputs=3)
    assert set(method.layers) == {"0"}
    assert all(set(per_layer) == {"0"} for per_layer in method.state_dict().values())


def test_a_data_loader_run_equals_the_in_memory_run_with_the_same_order():
    """The same order through a DataLoader, also one with worker processes (and pinned memory where there is a
    GPU to copy to), gives the in-memory run's weights."""
    data = blobs()
    weights = []
    for kind in ("memory", "loader", "workers"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.Tanh()), nn.Sequential(nn.Linear(8, 3), nn.Sigmoid()))
        trainer = Trainer(model, make_method("f3"), torch.optim.Adam(model.parameters(), 1e-2), BCE, progress=False)
        if kind == "memory":
            trainer.fit(data.train, epochs=1, batch_size=20, seed=3)
        else:
            order = torch.randperm(len(data.train), generator=epoch_generator(3, 1)).tolist()
            labels = data.train.t.argmax(1)  # class indices, converted by the objective
            # its own generator: a DataLoader without one draws its seed from the global RNG, which also
            # draws the feedback matrices
            workers = {"num_workers": 2, "pin_memory": torch.cuda.is_available()} if kind == "workers" else {}
            loader = DataLoader(WithIndex(TensorDataset(data.train.x, labels)), batch_size=20, sampler=order,
                                generator=torch.Generator(), **workers)
            trainer.fit(loader, epochs=1)
        weights.append([p.detach().clone() for p in model.parameters()])
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_trainer_takes_a_subclass_and_a_loader_of_pairs_and_dfa_beats_shallow():
    data = blobs(n=600)
    loader = DataLoader(TensorDataset(data.train.x, data.train.t.argmax(1)), batch_size=25, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    test = DataLoader(TensorDataset(data.test.x, data.test.t.argmax(1)), batch_size=100)

    class Narrow(nn.Module):  # a bottleneck of 2 units: the output layer alone cannot separate 3 classes well
        def __init__(self):
            super().__init__()
            self.hidden = nn.Sequential(nn.Linear(4, 2), nn.Tanh())
            self.out = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid())

        def forward(self, x):
            return self.out(self.hidden(x))

    accuracy = {}
    for spec in ("shallow", "dfa"):
        torch.manual_seed(1)
        model = Narrow()
        history = Trainer(model, make_method(spec), torch.optim.Adam(model.parameters(), 3e-2), BCE,
                          progress=False).fit(loader, epochs=10, eval_set=test)
        accuracy[spec] = history[-1]["test_accuracy"]
    assert accuracy["dfa"] > 0.95
    assert accuracy["dfa"] > accuracy["shallow"] + 0.05
