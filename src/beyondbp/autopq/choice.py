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
    """One sampler's parameters, validation CRPS and test quantiles (normalised, ``[N, 24, L]``)."""

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
    """Search each latent sampler that ``names`` use on the validation CRPS, calibrate where named, and return
    every named sampler fitted, with the search's trials."""
    levels, low, high = np.asarray(config.levels), splits.low, splits.high
    validation = CINNQuantiles(net, splits.validation.c, y_hat["validation"], low, high, config.samples,
                               config.seed, config.device)
    every = slice(None, None, config.search_every)
    searched = validation if config.search_every == 1 else CINNQuantiles(
        net, splits.validation.c[every], y_hat["validation"][every], low, high, config.samples, config.seed,
        config.device)
    test = CINNQuantiles(net, splits.test.c, y_hat["test"], low, high, config.samples, config.seed + 1,
                         config.device)
    y = splits.validation.y
    fitted, trials = {}, []
    for latent_name in dict.fromkeys(name.removesuffix(CONFORMAL) for name in names):
        sampler = LATENT_SAMPLERS[latent_name]
        parameters, records = search_sampler(lambda p: crps(y[every], searched.quantiles(sampler, p, levels), levels),
                                             sampler, (config.sigma_low, config.sigma_high), config.trials,
                                             config.patience, config.seed, progress)
        trials += records
        q_validation, q_test = validation.quantiles(sampler, parameters, levels), test.quantiles(sampler, parameters,
                                                                                                   levels)
        if latent_name in names:
            score = calibration.later_half_crps(y, q_validation, levels, low, high, conformal=False)
            fitted[latent_name] = FittedSampler(latent_name, parameters, score, q_test)
        if latent_name + CONFORMAL in names:
            offsets = calibration.shifts(y, q_validation, levels)
            score = calibration.later_half_crps(y, q_validation, levels, low, high, conformal=True)
            fitted[latent_name + CONFORMAL] = FittedSampler(latent_name + CONFORMAL, parameters, score,
                                                            calibration.calibrate(q_test, offsets, low, high))
    return fitted, trials


def chosen(fitted: dict[str, FittedSampler]) -> FittedSampler:
    """The sampler with the lowest validation CRPS."""
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
        """The score at ``value`` (None: the best value for all validation windows, by a line search) and the
        value used: as AutoPQ-default's choice scores, on the later half of the validation windows
        (:func:`.calibration.later_half_crps`)."""
        if value is None:
            value, _ = line_search_sigma(
                lambda v: crps(y, validation.quantiles(self.sampler, {self.key: v}, levels), levels), self.bounds)
        q = validation.quantiles(self.sampler, {self.key: value}, levels)
        return calibration.later_half_crps(y, q, levels, validation.low, validation.high, self.conformal), value

    def test_quantiles(self, validation: CINNQuantiles, test: CINNQuantiles, y: np.ndarray, levels: np.ndarray,
                       value: float) -> np.ndarray:
        """The test quantiles at ``value``, calibrated on the validation windows where the name says so."""
        q = test.quantiles(self.sampler, {self.key: value}, levels)
        if not self.conformal:
            return q
        offsets = calibration.shifts(y, validation.quantiles(self.sampler, {self.key: value}, levels), levels)
        return calibration.calibrate(q, offsets, test.low, test.high)
