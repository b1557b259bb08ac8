"""AutoPQ's samplers fitted on the validation windows, and the one with the lowest validation CRPS.

A sampler is a latent sampler (:mod:`.samplers`: ``faithful``, ``additive``, ``mix``), optionally followed by
conformal calibration (``+conformal``, :mod:`.calibration`). ``auto`` fits all six and keeps the one with
the lowest CRPS on the later half of the validation windows, where a calibrated one is shifted by what the
earlier half shows (:func:`.calibration.later_half_crps`); the test windows never take part in the choice.
Every fitted sampler's test quantiles are kept, so the faithful one's numbers stay in the tables.

AutoPQ-advanced tunes the sampler of every candidate forecaster by a line search, so it takes the samplers
with one parameter (σ of ``faithful``, ρ of ``mix``, each with or without ``+conformal``:
:class:`ScalarSampler`), on one noise draw per set of windows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import calibration
from .samplers import LATENT_SAMPLERS, CINNQuantiles
from .scores import crps
from .search import line_search_sigma, search_sampler
from .series import Splits

CONFORMAL = "+conformal"
#: Every ``--sampler`` choice.
SAMPLERS = (*LATENT_SAMPLERS, *(f"{name}{CONFORMAL}" for name in LATENT_SAMPLERS), "auto")
#: The one parameter of each sampler that AutoPQ-advanced can tune per candidate.
SCALAR_PARAMETERS = {"faithful": "sigma", "mix": "rho"}
SCALAR_SAMPLERS = tuple(name + suffix for name in SCALAR_PARAMETERS for suffix in ("", CONFORMAL))
RHO_RANGE = (0.01, 1.0)


@dataclass
class FittedSampler:
    """One sampler's parameters, the score it is chosen by (CRPS on the later half of the validation windows,
    :func:`.calibration.later_half_crps`) and its test quantiles (normalised, ``[N, 24, L]``)."""

    name: str
    parameters: dict[str, Any]
    validation_crps: float
    test: np.ndarray


def candidates(sampler: str, validation_windows: int, levels: np.ndarray) -> tuple[list[str], str | None]:
    """The samplers to fit for ``--sampler`` and why some of ``auto``'s were left out (None if none was). A
    calibrated sampler named on its own and a split too short for it is an error."""
    if sampler != "auto":
        if sampler.endswith(CONFORMAL):
            calibration.check_windows(validation_windows, levels)
        return [sampler], None
    if validation_windows // 2 < calibration.minimum_windows(levels):
        return list(LATENT_SAMPLERS), (f"conformal calibration left out: {validation_windows} validation windows, "
                                       f"{2 * calibration.minimum_windows(levels)} needed")
    return list(SAMPLERS[:-1]), None


def fit_samplers(names: list[str], config, net, splits: Splits, y_hat: dict[str, np.ndarray],
                 progress: bool) -> tuple[dict[str, FittedSampler], list[dict[str, Any]]]:
    """Search each named sampler on the validation windows (a calibrated one on the CRPS it will be chosen
    by, :func:`.calibration.later_half_crps`, so that its search can find the spread that is best after
    calibration) and return every one fitted, with the searches' trials."""
    levels, low, high, y = np.asarray(config.levels), splits.low, splits.high, splits.validation.y
    validation = CINNQuantiles(net, splits.validation.c, y_hat["validation"], low, high, config.samples,
                               config.seed, config.device)
    test = CINNQuantiles(net, splits.test.c, y_hat["test"], low, high, config.samples, config.seed + 1,
                         config.device)
    every = slice(None, None, config.search_every)
    searched = validation if config.search_every == 1 else CINNQuantiles(
        net, splits.validation.c[every], y_hat["validation"][every], low, high, config.samples, config.seed,
        config.device)
    fitted, trials = {}, []
    for name in names:
        sampler, conformal = LATENT_SAMPLERS[name.removesuffix(CONFORMAL)], name.endswith(CONFORMAL)

        def score(parameters: dict[str, Any]) -> float:
            q = searched.quantiles(sampler, parameters, levels)
            return (calibration.later_half_crps(y[every], q, levels, low, high, conformal=True) if conformal
                    else crps(y[every], q, levels))

        parameters, records = search_sampler(score, dataclasses.replace(sampler, name=name),
                                             (config.sigma_low, config.sigma_high), config.trials,
                                             config.patience, config.seed, progress)
        trials += records
        q_validation, q_test = (windows.quantiles(sampler, parameters, levels) for windows in (validation, test))
        if conformal:
            q_test = calibration.calibrate(q_test, calibration.shifts(y, q_validation, levels), low, high)
        fitted[name] = FittedSampler(name, parameters, calibration.later_half_crps(y, q_validation, levels, low,
                                                                                   high, conformal), q_test)
    return fitted, trials


def chosen(fitted: dict[str, FittedSampler]) -> FittedSampler:
    """The sampler with the lowest score on the later half of the validation windows."""
    return min(fitted.values(), key=lambda f: f.validation_crps)


class ScalarSampler:
    """A one-parameter sampler (``SCALAR_SAMPLERS``), optionally calibrated, on a fixed noise draw."""

    def __init__(self, name: str, sigma_range: tuple[float, float]):
        latent = name.removesuffix(CONFORMAL)
        self.name, self.conformal = name, name.endswith(CONFORMAL)
        self.sampler = dataclasses.replace(LATENT_SAMPLERS[latent], fresh_noise=False)
        self.key = SCALAR_PARAMETERS[latent]
        self.bounds = sigma_range if self.key == "sigma" else RHO_RANGE

    def suggest(self, trial) -> float:
        return trial.suggest_float(self.key, *self.bounds, log=True)

    def validation_crps(self, validation: CINNQuantiles, y: np.ndarray, levels: np.ndarray,
                        value: float | None = None) -> tuple[float, float]:
        """The score at ``value`` (None: the best value, by a line search on that score) and the value used:
        as AutoPQ-default's choice scores, on the later half of the validation windows
        (:func:`.calibration.later_half_crps`)."""
        def later_half(v: float) -> float:
            q = validation.quantiles(self.sampler, {self.key: v}, levels)
            return calibration.later_half_crps(y, q, levels, validation.low, validation.high, self.conformal)

        if value is None:
            value, score = line_search_sigma(later_half, self.bounds)
            return score, value
        return later_half(value), value

    def test_quantiles(self, validation: CINNQuantiles, test: CINNQuantiles, y: np.ndarray, levels: np.ndarray,
                       value: float) -> np.ndarray:
        """The test quantiles at ``value``, calibrated on the validation windows where the name says so."""
        q = test.quantiles(self.sampler, {self.key: value}, levels)
        if not self.conformal:
            return q
        offsets = calibration.shifts(y, validation.quantiles(self.sampler, {self.key: value}, levels), levels)
        return calibration.calibrate(q, offsets, test.low, test.high)
