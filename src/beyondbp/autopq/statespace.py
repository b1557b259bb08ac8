"""ETS and SARIMAX as AutoPQ point forecasters: statsmodels' linear Gaussian state-space models.

The AutoPQ paper pairs its cINN with ETS and SARIMAX of seasonal period 24 (Meisenbacher et al. 2024).
Both model the whole series, not windows, so they implement
:class:`~beyondbp.autopq.forecasters.SeriesForecaster`:

- the parameters are estimated by maximum likelihood on the last ``fit_hours`` hours of the training part
  (a likelihood evaluation costs O(T · states²), and with a daily season there are about 26 states);
- the Kalman filter then runs from the first of these hours to the end of the series with the parameters
  fixed (statsmodels' ``apply``; the estimated initial state belongs to that hour), which gives the
  predicted state ``a_{o|o−1}`` at every later hour ``o`` from the hours before it only;
- the forecast of hour ``o + h`` from origin ``o`` is ``d_{o+h} + Z a_{o+h|o−1}`` with
  ``a_{t+1|o−1} = c_t + T a_{t|o−1}`` (design ``Z``, transition ``T``, intercepts ``c``, ``d``; the
  exogenous features of SARIMAX enter through ``d``), computed for all origins at once. It equals
  statsmodels' own ``forecast(24)`` from that origin (a test checks it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from .series import HORIZON

#: Hours of the training part used for the maximum-likelihood fit (12 weeks).
FIT_HOURS = 12 * 7 * 24
MAX_ITERATIONS = 50


class StateSpaceForecaster:
    """A statsmodels ``MLEModel`` built by ``make_model(endog, exog)`` as a series forecaster."""

    def __init__(self, make_model: Callable, name: str, uses_features: bool, fit_hours: int = FIT_HOURS):
        self.make_model, self.name, self.uses_features, self.fit_hours = make_model, name, uses_features, fit_hours

    def fit_series(self, target: np.ndarray, features: np.ndarray, end: int) -> StateSpaceForecaster:
        exog = features if self.uses_features and features.shape[1] else None
        begin = max(0, end - self.fit_hours)
        model = self.make_model(target[begin:end], None if exog is None else exog[begin:end])
        bar = tqdm(total=MAX_ITERATIONS, desc=f"{self.name}, likelihood iterations", disable=None, leave=False)
        with bar, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' convergence and frequency notices
            fitted = model.fit(disp=False, maxiter=MAX_ITERATIONS, callback=lambda *_: bar.update())
            self.begin = begin
            self.filtered = fitted.apply(target[begin:], exog=None if exog is None else exog[begin:])
        return self

    def predict_origins(self, origins: np.ndarray) -> np.ndarray:
        ssm = self.filtered.model.ssm
        design, transition = (ssm[name][..., 0] if ssm[name].ndim == 3 else ssm[name]
                              for name in ("design", "transition"))
        state_intercept, obs_intercept = ssm["state_intercept"], ssm["obs_intercept"]
        at = lambda values, hours: values[:, None] if values.ndim == 1 else values[:, hours]
        if origins.min() < self.begin:
            raise ValueError(f"{self.name} forecasts from hour {self.begin} on, where its fit began; "
                             f"asked for hour {origins.min()}")
        origins = origins - self.begin
        state = self.filtered.filter_results.predicted_state[:, origins]  # a_{o|o-1}, [states, N]
        forecast = np.empty((len(origins), HORIZON))
        for h in range(HORIZON):
            forecast[:, h] = (design @ state + at(obs_intercept, origins + h))[0]
            state = transition @ state + at(state_intercept, origins + h)
        return forecast.astype(np.float32)


def exponential_smoothing(trend: bool = False, damped_trend: bool = False, seasonal: bool = True,
                          fit_hours: int = FIT_HOURS) -> StateSpaceForecaster:
    """Additive exponential smoothing (statsmodels' state-space ``ExponentialSmoothing``): by default with a
    season of 24 hours and no trend; a damped trend needs a trend."""
    from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing

    def make(endog, exog):
        return ExponentialSmoothing(endog, trend=trend, damped_trend=damped_trend and trend,
                                    seasonal=HORIZON if seasonal else None)

    return StateSpaceForecaster(make, "ets", False, fit_hours)


def seasonal_arimax(order: tuple[int, int, int] = (2, 0, 1), seasonal_order: tuple[int, int, int] = (1, 0, 1),
                    fit_hours: int = FIT_HOURS) -> StateSpaceForecaster:
    """SARIMAX with a season of 24 hours; the exogenous features over the target hours as regressors."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    return StateSpaceForecaster(
        lambda endog, exog: SARIMAX(endog, exog, order=order, seasonal_order=(*seasonal_order, HORIZON)),
        "sarimax", True, fit_hours)
