"""Batch-norm statistics recomputed at the current weights before each evaluation (``recompute_bn``)."""

from __future__ import annotations

from itertools import islice

import pytest
import torch
from torch import nn

from beyondbp import RunConfig, run
from beyondbp.bn_statistics import recompute_bn_statistics
from beyondbp.checkpoint import load_checkpoint
from beyondbp.data import load_dataset, loaders
from beyondbp.errors import BeyondBPError
from beyondbp.models.registry import MODELS
from beyondbp.streams import BN_STATISTICS, epoch_generator
from test_recipe import Stop, StopAfterFirstEpoch


def test_statistics_are_the_average_of_the_batches_statistics_and_nothing_else_moves():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3), nn.Dropout(0.5), nn.Linear(4, 2))
    model[1].running_mean.fill_(7.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    model[2].eval()  # a mode the caller set stays
    batches = [torch.randn(5, 3) * (i + 1) for i in range(3)]
    rng = torch.get_rng_state()
    assert recompute_bn_statistics(model, iter(batches)) == 3
    hidden = [model[0](x).detach() for x in batches]
    mean = torch.stack([h.mean(0) for h in hidden]).mean(0)
    var = torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert model[1].momentum == 0.3 and int(model[1].num_batches_tracked) == 3
    assert model.training and model[1].training and not model[2].training
    assert torch.equal(torch.get_rng_state(), rng)  # dropout ran in eval mode: no random number drawn
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


COMMON = dict(method="dfa", dataset="digits", model="resnet20", loss="ce", lr=3e-3, batch_size=64, seed=1, epochs=2)


def test_a_run_evaluates_with_recomputed_statistics_and_resumes_bit_exactly(tmp_path):
    """The stored statistics are those of the 4 batches the epoch's own generator draws at the final weights;
    a run stopped after its first epoch and resumed ends equal to one that never stopped; and the test accuracy
    of DFA at this learning rate, whose weights move fast, gains from them (measured 0.78 -> 0.84)."""
    with pytest.raises(Stop):
        run(RunConfig(**COMMON, recompute_bn=4), tmp_path / "stopped", progress=False, logger=StopAfterFirstEpoch())
    resumed = run(RunConfig(**COMMON, recompute_bn=4), tmp_path / "stopped", resume=True, progress=False)
    whole = run(RunConfig(**COMMON, recompute_bn=4), tmp_path / "whole", progress=False)
    stale = run(RunConfig(**COMMON), tmp_path / "stale", progress=False)
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt", "cpu")["model"] for name in ("stopped", "whole"))
    assert all(torch.equal(a[k], b[k]) for k in b) and resumed["test_accuracy"] == whole["test_accuracy"]
    assert whole["test_accuracy"] > stale["test_accuracy"] + 0.03

    data = load_dataset("digits")
    model = MODELS.get("resnet20")(data.train.input_shape, data.train.num_outputs)
    model.load_state_dict(b)
    stored = {k: v.clone() for k, v in b.items() if "running" in k}
    batches = loaders.iterate(data.train, 64, epoch_generator(1, 2, BN_STATISTICS), "cpu")
    recompute_bn_statistics(model, (x for x, _, _ in islice(batches, 4)))
    assert all(torch.allclose(model.state_dict()[k], v, rtol=1e-5, atol=1e-6) for k, v in stored.items())


@pytest.mark.parametrize("settings,message", [
    ({"model": "mlp", "hidden": (16,)}, "has no batch norm that keeps running statistics: leave it at 0"),
    ({"recompute_bn": -1}, "recompute_bn must be at least 0, got -1"),
])
def test_recomputing_statistics_that_cannot_help_is_refused(tmp_path, settings, message):
    with pytest.raises(BeyondBPError, match=message):
        run(RunConfig(**{**COMMON, "epochs": 1, "recompute_bn": 2, **settings}), tmp_path, progress=False)
