"""AutoPQ's conditions as the authors build them (per-hour calendar with holidays, clipping before the latent
map), their ensemble CRPS, their plateau stop, and our conformal calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from beyondbp.autopq import Series, make_windows
from beyondbp.autopq.calendar import calendar_features, check_region, workdays
from beyondbp.autopq.calibration import calibrate, check_windows, later_half_crps, shifts
from beyondbp.autopq.choice import candidates
from beyondbp.autopq.cinn import CINNSettings, ConditionalINN
from beyondbp.autopq.samplers import LATENT_SAMPLERS, CINNQuantiles
from beyondbp.autopq.scores import LEVELS, coverage, crps_ensemble
from beyondbp.autopq.search import plateaued, search_sampler
from beyondbp.errors import BeyondBPError


def day(text: str) -> np.ndarray:
    return pd.date_range(text, periods=1, freq="h").to_numpy()


@pytest.mark.parametrize("region, date, workday", [
    ("DE", "2018-10-03 12:00", 0.0),  # German Unity Day, a Wednesday
    ("DE", "2018-01-06 12:00", 0.0),  # a Saturday anyway
    ("DE", "2019-01-07 12:00", 1.0),  # an ordinary Monday
    ("DE", "2018-11-01 12:00", 1.0),  # All Saints' Day: not a holiday in all of Germany...
    ("DE-BW", "2018-11-01 12:00", 0.0),  # ...but in Baden-Wuerttemberg
    ("PT", "2012-06-13 12:00", 1.0),  # St Anthony: Lisbon's, not Portugal's
    ("PT", "2012-06-10 12:00", 0.0),  # Portugal Day (a Sunday too)
    ("PT", "2016-06-10 12:00", 0.0),  # Portugal Day on a Friday
    ("US-DC", "2012-04-16 12:00", 0.0),  # DC Emancipation Day (observed on Monday)
    ("US", "2012-04-16 12:00", 1.0),  # not a federal holiday
    ("none", "2018-10-03 12:00", 1.0),  # weekends only
])
def test_holiday_flags_of_known_dates(region, date, workday):
    assert workdays(day(date), region)[0] == workday


def test_calendar_of_each_hour_of_a_window_that_crosses_midnight_into_a_weekend():
    """A window from Friday 2018-10-05 12:00: its first 12 hours are a workday, the next 12 Saturday; each hour
    has its own hour of day, and the window's conditions hold all 24 × 5 values in order."""
    time = pd.date_range("2018-09-01", periods=24 * 120, freq="h").to_numpy()
    series = Series("s", np.arange(len(time), dtype=float), np.zeros((len(time), 0)), time)
    splits = make_windows(series, holidays="DE")
    index = int(np.flatnonzero(splits.train.start == np.datetime64("2018-10-05T12:00"))[0])
    calendar = splits.train.c[index, 24:].reshape(24, 5)
    assert calendar[:, 4].tolist() == [1.0] * 12 + [0.0] * 12
    hours = np.arange(12, 36) % 24
    assert np.allclose(calendar[:, 0], np.sin(2 * np.pi * hours / 24), atol=1e-6)
    assert np.allclose(calendar[:, 1], np.cos(2 * np.pi * hours / 24), atol=1e-6)
    assert np.allclose(calendar, calendar_features(time[splits.train.origin[index] + np.arange(24)], "DE"), atol=1e-6)
    tuesday = int(np.flatnonzero(splits.train.start == np.datetime64("2018-10-02T12:00"))[0])  # into the 3rd
    assert splits.train.c[tuesday, 24:].reshape(24, 5)[:, 4].tolist() == [1.0] * 12 + [0.0] * 12


def test_unknown_regions_are_refused_with_how_to_name_one():
    with pytest.raises(BeyondBPError, match="ISO 3166 code"):
        check_region("Germany")
    with pytest.raises(BeyondBPError, match="subdivisions are"):
        check_region("DE-XX")


def test_ensemble_crps_by_hand():
    """Members 1 and −1 at y = 0: mean |x − y| = 1, Σ|x_i − x_j| = 4, so 1 − 4 / 8 = 0.5; one member is the
    absolute error; and the pairwise formula on random members."""
    assert crps_ensemble(np.array([0.0]), np.array([[1.0, -1.0]])) == pytest.approx(0.5)
    assert crps_ensemble(np.array([2.0]), np.array([[0.5]])) == pytest.approx(1.5)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 17)), rng.normal(size=4)
    pairwise = np.abs(x[:, :, None] - x[:, None, :]).sum((1, 2)) / (2 * 17 ** 2)
    assert crps_ensemble(y, x) == pytest.approx(float((np.abs(x - y[:, None]).mean(1) - pairwise).mean()))


def test_conformal_shifts_reach_nominal_coverage_where_the_quantiles_are_too_narrow():
    """Quantiles of N(0, 0.5²) for data from N(0.3, 1): far too narrow and biased. Shifted by what the
    calibration windows show, they cover each level within 2.5 points on new windows, and the later-half
    score that chooses samplers sees the gain."""
    rng = np.random.default_rng(0)
    q = np.broadcast_to(0.5 * np.quantile(rng.normal(size=100_000), LEVELS), (4000, 24, len(LEVELS))).copy()
    y = rng.normal(0.3, 1.0, (4000, 24))
    calibration, new = slice(0, 2000), slice(2000, None)
    raw = np.abs(coverage(y[new], q[new]) - LEVELS).max()
    fixed = calibrate(q[new], shifts(y[calibration], q[calibration], LEVELS), -np.inf, np.inf)
    assert raw > 0.1 and np.abs(coverage(y[new], fixed) - LEVELS).max() < 0.025
    raw_score, calibrated_score = (later_half_crps(y, q, LEVELS, -np.inf, np.inf, c) for c in (False, True))
    assert calibrated_score < 0.95 * raw_score


def test_a_calibration_split_too_short_for_the_levels_is_refused_or_left_out_by_auto():
    with pytest.raises(BeyondBPError, match="at least 200 validation windows"):
        check_windows(150, LEVELS)
    check_windows(200, LEVELS)
    names, why = candidates("auto", 150, LEVELS)
    assert names == ["faithful", "additive", "mix"] and "150 validation windows" in why
    assert len(candidates("auto", 400, LEVELS)[0]) == 6
    with pytest.raises(BeyondBPError, match="conformal calibration needs"):
        candidates("mix+conformal", 150, LEVELS)


def test_the_authors_plateau_stop():
    """Stop once the 5 best scores lie within a standard deviation of 0.0005 for 5 trials in a row."""
    values, streak = [0.5, 0.4, 0.3001, 0.3002, 0.3, 0.3003], 0
    for n in range(1, len(values) + 1):
        streak = plateaued(values[:n], streak)
    assert streak == 0  # the best five still include 0.4
    assert plateaued([0.3, 0.3001, 0.3002, 0.3003, 0.3004], 3) == 4
    calls = []
    parameters, records = search_sampler(lambda p: calls.append(p) or 0.3 + 1e-5 * p["sigma"],
                                         LATENT_SAMPLERS["faithful"], trials=100, progress=False)
    assert len(records) == 9  # 5 trials fill the top five, then 5 in a row on the plateau (the 5th counts)
    assert 0.01 <= parameters["sigma"] <= 3 and records[0]["sampler"] == "faithful"


def test_the_point_forecast_is_clipped_before_the_latent_map_and_faithful_noise_is_fresh():
    torch.manual_seed(0)
    net = ConditionalINN(24, 3, CINNSettings(blocks=2)).eval()
    c = np.zeros((2, 3), np.float32)
    inside = CINNQuantiles(net, c, np.full((2, 24), 1.0, np.float32), -np.inf, 1.0, samples=5)
    beyond = CINNQuantiles(net, c, np.full((2, 24), 3.0, np.float32), -np.inf, 1.0, samples=5)
    assert torch.equal(inside.z_hat, beyond.z_hat)
    faithful, mix = LATENT_SAMPLERS["faithful"], LATENT_SAMPLERS["mix"]
    assert not torch.equal(inside.samples(faithful, {"sigma": 0.5}), inside.samples(faithful, {"sigma": 0.5}))
    assert torch.equal(inside.samples(mix, {"rho": 0.5}), inside.samples(mix, {"rho": 0.5}))


class TrainingMean:
    """Forecasts every window as the mean of the targets it was fitted on."""

    def fit(self, c, y):
        self.mean = y.mean(0)
        return self

    def predict(self, c):
        return np.tile(self.mean, (len(c), 1))


def test_out_of_fold_forecasts_come_from_models_that_did_not_see_the_fold():
    from beyondbp.autopq.conditioned import out_of_fold, with_forecasts

    time = pd.date_range("2018-09-01", periods=24 * 40, freq="h").to_numpy()
    series = Series("s", np.arange(len(time), dtype=float), np.zeros((len(time), 0)), time)
    splits = make_windows(series, holidays="none")
    forecasts = out_of_fold(TrainingMean(), splits, folds=3)
    for fold in np.array_split(np.arange(len(splits.train)), 3):
        rest = np.setdiff1d(np.arange(len(splits.train)), fold)
        assert np.allclose(forecasts[fold], splits.train.y[rest].mean(0))
    wider = with_forecasts(splits, {"train": forecasts, "validation": splits.validation.y, "test": splits.test.y})
    assert wider.train.c.shape[1] == splits.train.c.shape[1] + 24
    assert np.array_equal(wider.test.c[:, -24:], splits.test.y)
    with pytest.raises(BeyondBPError, match="needs a forecaster of windows"):
        from beyondbp.autopq import make_forecaster
        out_of_fold(make_forecaster("naive"), splits)


def test_a_cinn_conditioned_on_the_forecast_is_trained_for_its_forecaster_alone(tmp_path):
    """The run trains its own cINN on conditions 24 values wider (never the cached one of the series), and
    AutoPQ-advanced, which shares one cINN among its candidates, refuses the option."""
    from beyondbp.autopq import AutoPQConfig, run_autopq
    from beyondbp.autopq.advanced import AdvancedConfig
    from test_autopq import seasonal_series

    series, cache = seasonal_series(days=30), tmp_path / "cinn.pt"
    plain = AutoPQConfig(csv="s.csv", target="y", forecaster="linear", cinn_epochs=2, trials=2, sampler="mix",
                         holidays="none", baselines=())
    run_autopq(plain, progress=False, series=series, cinn_cache=cache)
    conditioned = AutoPQConfig(**{**plain.__dict__, "cinn_forecast": True})
    summary = run_autopq(conditioned, progress=False, series=series, cinn_cache=cache)
    assert not summary["cinn_reused"] and np.isfinite(summary["metrics"]["autopq"]["crps"])
    assert torch.load(cache, weights_only=False)["state"]["condition_net.0.weight"].shape[1] == 24 + 24 * 5
    with pytest.raises(BeyondBPError, match="shares one cINN"):
        AdvancedConfig(csv="s.csv", target="y", cinn_forecast=True).validate()
