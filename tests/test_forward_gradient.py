"""Forward gradients: exactness of projection, the √(k/n) laws, unbiasedness, jvp, and no backward pass."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from beyondbp.approx import approximation_quality
from beyondbp.errors import BeyondBPError
from beyondbp.functions import FUNCTIONS, optimize
from beyondbp.methods import make_method
from beyondbp.methods.aggregation import aggregate
from beyondbp.methods.forward_gradient import directional_derivatives, forward_gradient, parse_variant
from beyondbp.methods.tangent_stream import (
    TangentStream,
    accumulate_estimate,
    dense_blocks,
    parameters_of,
    streamed_derivatives,
)
from beyondbp.methods.tangents import sample_tangents
from beyondbp.models import mlp
from beyondbp.objectives import make_objective

BCE = make_objective("bce", "classification")
cosine = lambda a, b: torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_projection_with_k_equal_n_is_exact():
    torch.manual_seed(0)
    x = torch.randn(32, dtype=torch.float64)
    f = FUNCTIONS.get("rosenbrock").f
    _, estimate = forward_gradient(f, x, torch.randn(32, 32, dtype=torch.float64), "projection")
    assert cosine(estimate, torch.func.grad(f)(x)) > 0.9999
    torch.testing.assert_close(estimate, torch.func.grad(f)(x))


def test_gaussian_tangents_follow_the_square_root_laws():
    rows = {r["aggregation"]: r for r in approximation_quality([1024], [16], ["mean", "projection"], samples=200)}
    expected = math.sqrt(16 / 1024)  # 0.125
    for how in ("mean", "projection"):
        assert rows[how]["cosine_mean"] == pytest.approx(expected, abs=0.015)
    assert rows["mean"]["norm_ratio_mean"] == pytest.approx(math.sqrt(1024 / 16), rel=0.1)  # 8
    assert rows["projection"]["norm_ratio_mean"] == pytest.approx(expected, abs=0.015)


def test_single_tangent_estimates_are_unbiased():
    torch.manual_seed(1)
    g = torch.randn(10, dtype=torch.float64)
    v = torch.randn(40_000, 10, dtype=torch.float64)
    average = aggregate(v, v @ g, "mean")  # the average of 40,000 single-tangent estimates d_j v_j
    assert cosine(average, g) > 0.999
    assert (average.norm() / g.norm()).item() == pytest.approx(1, abs=0.03)


def test_projection_does_not_depend_on_the_tangents_angle():
    narrow, wide = (approximation_quality([256], [8], ["mean", "projection"], sampler="angle", angle=a, samples=60)
                    for a in (10, 80))
    by = lambda rows, how: next(r for r in rows if r["aggregation"] == how)["cosine_mean"]
    assert by(narrow, "projection") == pytest.approx(by(wide, "projection"), abs=0.04)
    assert by(narrow, "mean") < by(narrow, "projection") - 0.05  # nearly parallel tangents hurt the mean


def test_angle_sampler_gives_the_angle():
    v = sample_tangents("angle", 5, 40, angle=60.0)
    gram = v @ v.T
    torch.testing.assert_close(gram.diagonal(), torch.ones(5), atol=1e-5, rtol=0)
    off = gram[~torch.eye(5, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, 0.5), atol=1e-5, rtol=0)


def test_rademacher_sampler_draws_balanced_signs():
    torch.manual_seed(0)
    v = sample_tangents("rademacher", 4, 50_000)
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert v.mean().item() == pytest.approx(0, abs=0.01)
    assert v.shape == (4, 50_000)


def test_projection_refuses_what_it_cannot_do():
    with pytest.raises(BeyondBPError, match="k=5 > n=4"):
        aggregate(torch.randn(5, 4), torch.randn(5), "projection")
    dependent = torch.tensor([[1.0, 0, 0], [2.0, 0, 0]])
    with pytest.raises(BeyondBPError, match="linearly dependent"):
        aggregate(dependent, torch.randn(2), "projection")
    with pytest.raises(BeyondBPError, match="one tangent"):
        make_method("fg:k2-single")


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), nn.Sequential(nn.Linear(4, 2), nn.Sigmoid()))


def batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(5, 3, generator=g), torch.eye(2)[torch.tensor([0, 1, 1, 0, 1])], torch.arange(5)


def exact_grads(model, x, t):
    model.zero_grad()
    BCE(model(x), t).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_model_jvp_equals_finite_difference():
    model = tiny_model().double()
    x, t, _ = batch()
    x, t = x.double(), t.double()
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(vector):
        pieces = {n: piece.view_as(p) for n, p, piece in zip(names, model.parameters(), vector.split(sizes))}
        return BCE(torch.func.functional_call(model, pieces, (x,)), t), ()

    v = torch.randn(3, theta.numel(), dtype=torch.float64)
    _, d, _ = directional_derivatives(loss, theta, v)
    eps = 1e-6
    fd = torch.stack([(loss(theta + eps * vj)[0] - loss(theta - eps * vj)[0]) / (2 * eps) for vj in v])
    torch.testing.assert_close(d, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("perturb,k", [("weights", 26), ("activities", 20)])
def test_fg_with_as_many_tangents_as_dimensions_is_backprop(perturb, k):
    """26 weights; 5 samples × 4 hidden units = 20 activities: projection on a full basis is exact."""
    model = tiny_model()
    x, t, index = batch()
    expected = exact_grads(model, x, t)
    model.zero_grad()
    method = make_method(f"fg:k{k}-projection-{perturb}")
    method.attach(model, num_outputs=2)
    method.step(model, x, t, index, BCE)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("perturb", ["weights", "activities"])
def test_k_separate_passes_give_the_batched_estimate(perturb):
    model = tiny_model()
    x, t, index = batch()
    grads = []
    for spec in (f"fg:k3-projection-{perturb}", f"fg:k3-projection-{perturb}-loop"):
        model.zero_grad(set_to_none=True)
        method = make_method(spec)
        method.attach(model, num_outputs=2)
        torch.manual_seed(5)
        method.step(model, x, t, index, BCE)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert make_method("fg:k3-loop").label == "fg:k3-mean-weights-loop"
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("batched", [True, False])
def test_every_tangent_sees_the_same_dropout_mask(batched):
    """With dropout inside, each derivative is of one sampled function: the one autograd differentiates from the
    same random state (HF models train with dropout on)."""
    weight, z, tangents = torch.randn(10), torch.randn(10), torch.randn(3, 10)

    def f(z):
        return (nn.functional.dropout(z * weight, 0.5) ** 2).sum(), ()

    torch.manual_seed(3)
    value, derivatives, _ = directional_derivatives(f, z, tangents, batched)
    after = torch.rand(1)
    torch.manual_seed(3)
    leaf = z.clone().requires_grad_()
    exact = f(leaf)[0]
    gradient, = torch.autograd.grad(exact, leaf)
    torch.testing.assert_close(value, exact.detach())
    torch.testing.assert_close(derivatives, tangents @ gradient, rtol=1e-5, atol=1e-6)
    assert torch.equal(after, torch.rand(1))  # the random state moved on as one forward pass moves it


def test_weight_perturbation_builds_no_autograd_graph():
    model = tiny_model()
    x, t, index = batch()
    saved = []
    method = make_method("fg:k4-mean")
    method.attach(model, num_outputs=2)
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        result = method.step(model, x, t, index, BCE)
    assert saved == [] and result.loss.grad_fn is None and result.output.grad_fn is None
    assert all(p.grad is not None and p.grad.grad_fn is None and torch.isfinite(p.grad).all()
               for p in model.parameters())
    # and the estimate points the right way: positive cosine with the exact gradient on average
    exact = torch.cat([g.flatten() for g in exact_grads(model, x, t)])
    torch.manual_seed(3)
    estimates = []
    for _ in range(200):
        model.zero_grad()
        method.step(model, x, t, index, BCE)
        estimates.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert cosine(torch.stack(estimates).mean(0), exact) > 0.8


def test_variant_grammar():
    assert parse_variant("k4-projection-activities-rademacher") == {
        "tangents": 4, "aggregation": "projection", "perturb": "activities", "sampler": "rademacher"}
    assert make_method("fg:k2-sum-angle30").label == "fg:k2-sum-weights-angle30"
    with pytest.raises(BeyondBPError, match="unknown fg variant part 'bogus'"):
        make_method("fg:k2-bogus")


def test_optimize_reaches_the_minimum_of_the_sphere():
    result = optimize("sphere", dim=16, tangents=16, aggregation="projection", steps=200, lr=0.1)
    assert result.final < 1e-10 and result.minimum == 0
    few = optimize("styblinski-tang", dim=8, tangents=2, aggregation="mean", steps=300, lr=0.01, seed=1)
    assert few.minimum == pytest.approx(-39.16599 * 8)
    assert few.final < FUNCTIONS.get("styblinski-tang").f(FUNCTIONS.get("styblinski-tang").start(
        8, torch.Generator().manual_seed(1))).item()


@pytest.mark.parametrize("sampler", ["normal", "rademacher"])
@pytest.mark.parametrize("aggregation", ["mean", "sum", "projection"])
def test_streamed_tangents_give_the_whole_tangents_estimate(sampler, aggregation):
    """Tangents drawn per parameter and drawn again for the estimate: the same numbers as the estimate from
    the same tangents held whole (k x n) through torch.func.jvp."""
    torch.manual_seed(0)
    objective = make_objective("ce", "classification")
    model = mlp(20, 5, hidden=(16, 12), activation="tanh")
    x, t = torch.randn(8, 20), objective.targets(torch.randint(0, 5, (8,)), 5)
    blocks = dense_blocks(model)
    params = parameters_of(blocks)
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    stream = TangentStream(sampler, 123, torch.device("cpu"))
    _, loss, derivatives = streamed_derivatives(blocks, x, t, objective, stream, 4)
    estimates = [torch.zeros_like(p) for p in params]
    accumulate_estimate(estimates, stream, derivatives, aggregation)
    streamed = torch.cat([g.reshape(-1) for g in estimates])
    whole = stream.full([p.shape for p in params], 4)
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]

    def loss_of(theta):
        output = functional_call(model, {n: piece.view_as(p) for (n, p), piece in zip(named, theta.split(sizes))},
                                 (x,))
        return objective(output, t), output

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    whole_loss, whole_derivatives, _ = directional_derivatives(loss_of, theta, whole)
    torch.testing.assert_close(derivatives, whole_derivatives, rtol=1e-6, atol=1e-6)
    expected = aggregate(whole, whole_derivatives, aggregation)
    assert (streamed - expected).abs().max() <= 1e-6 * expected.abs().max()
    assert torch.equal(stream.draw(2, 1, (12, 16)), stream.draw(2, 1, (12, 16)))  # drawn again, identically


@pytest.mark.parametrize("aggregation", ["mean", "projection"])
def test_streamed_activity_tangents_give_the_whole_tangents_estimate(aggregation):
    """Activity perturbation drawn block by block against the hooked jvp path (the loop variant) given the
    same tangents whole."""
    objective = make_objective("bce", "classification")
    x, t = torch.randn(8, 20), objective.targets(torch.randint(0, 5, (8,)), 5)
    grads = []
    for spec in (f"fg:k3-{aggregation}-activities", f"fg:k3-{aggregation}-activities-loop"):
        torch.manual_seed(0)
        model = mlp(20, 5, hidden=(16, 12), activation="tanh", output_activation=nn.Sigmoid())
        method = make_method(spec)
        method.attach(model, num_outputs=5)
        torch.manual_seed(5)
        method.step(model, x, t, None, objective)
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert (grads[0] - grads[1]).abs().max() <= 1e-6 * grads[1].abs().max()


@pytest.mark.parametrize("shape", [(1001, 999), (1024, 1024)])  # through the table's gather, or not
def test_streamed_rademacher_signs_come_from_random_bits_balanced(shape):
    stream = TangentStream("rademacher", 7, torch.device("cpu"))
    signs = stream.draw(0, 0, shape)
    assert signs.shape == shape and set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(signs.mean().item()) < 4 / 1000  # 4 standard deviations of the mean of 10^6 fair signs
    pairs = signs.view(-1)[:-1] * signs.view(-1)[1:]
    assert abs(pairs.mean().item()) < 4 / 1000  # neighbours (bits of one byte) independent
    by_bit = signs.view(-1)[:len(signs.view(-1)) // 64 * 64].view(-1, 64).mean(0)
    assert by_bit.abs().max() < 5 / 125  # every bit of the random words fair, the top one too (5 sd of 15,625)
    assert torch.equal(stream.draw(0, 0, shape), signs) and torch.equal(stream.draw(0, 0, shape, scratch=True), signs)


def test_streamed_tangents_are_only_for_dense_blocks_and_independent_samplers():
    assert dense_blocks(mlp(4, 2, hidden=(3,))) is not None
    assert dense_blocks(nn.Sequential(nn.Conv2d(1, 2, 3))) is None
    with pytest.raises(BeyondBPError, match="independent entries"):
        TangentStream("angle", 0, torch.device("cpu"))


def test_streamed_step_memory_does_not_grow_with_k():
    """The step's peak memory (bench speed's meter) with 16 tangents equals that with one, and stays under
    twice backprop's, for weight and activity tangents; the projection grows by k x the largest parameter."""
    from beyondbp.bench.speed import Setup

    def memory(spec):
        return Setup(spec, "mlp", 4, 256, 64, torch.device("cpu")).step_memory()

    bp = memory("bp")
    largest = 256 * 256 * 4
    for perturb in ("", "-activities"):
        one, sixteen = memory(f"fg:k1{perturb}"), memory(f"fg:k16{perturb}")
        assert sixteen <= one + 4096 and sixteen <= 2 * bp
    assert memory("fg:k16-projection") - memory("fg:k4-projection") <= 12 * largest + 65536
