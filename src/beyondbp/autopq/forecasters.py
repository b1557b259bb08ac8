"""Point forecasters behind one small interface: ``fit(c, y)`` on training windows, ``predict(c) -> ŷ``.

``c`` are a window's conditions (:func:`~beyondbp.autopq.series.make_windows`: the previous 24 target
values first, then the exogenous features over the target hours, then the calendar), ``y`` and ``ŷ`` the
24 standardised target hours. AutoPQ's default configuration trains the forecaster once with its
default hyperparameters (Meisenbacher et al. 2024). Any object with these two methods plugs in
(:func:`beyondbp.autopq.run_autopq` takes it as ``forecaster``).

Models of the whole series (ETS, SARIMAX: :mod:`.statespace`) cannot be fed windows; they implement
:class:`SeriesForecaster` instead, and :func:`point_forecasts` serves both kinds.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from ..errors import BeyondBPError
from ..registry import Registry
from .series import HORIZON, Splits


class PointForecaster(Protocol):
    def fit(self, c: np.ndarray, y: np.ndarray) -> PointForecaster: ...

    def predict(self, c: np.ndarray) -> np.ndarray: ...


class SeriesForecaster(Protocol):
    """A model of the whole series: fitted on its training hours, it forecasts the 24 hours from any origin
    using only the hours before that origin."""

    def fit_series(self, target: np.ndarray, features: np.ndarray, end: int) -> SeriesForecaster:
        """``target`` ``[T]`` and ``features`` ``[T, F]`` are the whole standardised series; fit on ``[:end]``."""

    def predict_origins(self, origins: np.ndarray) -> np.ndarray:
        """``[N, 24]``: the forecast of hours ``o … o + 23`` from the hours before ``o``, for each origin."""


def point_forecasts(forecaster: PointForecaster | SeriesForecaster, splits: Splits,
                    parts: tuple[str, ...] = ("validation", "test")) -> dict[str, np.ndarray]:
    """Fit ``forecaster`` on the training part and forecast the windows of each of ``parts``."""
    if not all(hasattr(forecaster, m) for m in ("fit", "predict")) and not all(
            hasattr(forecaster, m) for m in ("fit_series", "predict_origins")):
        raise BeyondBPError(f"forecaster {type(forecaster).__name__} has neither fit(c, y) and predict(c) nor "
                            "fit_series(target, features, end) and predict_origins(origins)")
    if hasattr(forecaster, "fit_series"):
        forecaster.fit_series(splits.target, splits.features, splits.validation_start)
        return {part: np.asarray(forecaster.predict_origins(getattr(splits, part).origin), np.float32)
                for part in parts}
    forecaster.fit(splits.train.c, splits.train.y)
    return {part: np.asarray(forecaster.predict(getattr(splits, part).c), np.float32) for part in parts}


FORECASTERS: Registry = Registry("forecaster")


@FORECASTERS.register("naive", "seasonal naive: the same hours of the day before the origin")
class SeasonalNaive:
    """Hours ``o … o + 23`` forecast as hours ``o − 24 … o − 1`` (a model of the series, so that it never
    depends on the windows' history lag)."""

    def __init__(self, seed: int = 0):
        pass

    def fit_series(self, target: np.ndarray, features: np.ndarray, end: int) -> SeasonalNaive:
        self.target = target
        return self

    def predict_origins(self, origins: np.ndarray) -> np.ndarray:
        return self.target[origins[:, None] - HORIZON + np.arange(HORIZON)].astype(np.float32)


class SklearnForecaster:
    """A scikit-learn regressor with 24 outputs."""

    def __init__(self, model):
        self.model = model

    def fit(self, c: np.ndarray, y: np.ndarray) -> SklearnForecaster:
        self.model.fit(c, y)
        return self

    def predict(self, c: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(c), dtype=np.float32).reshape(len(c), -1)


class PerHourForecaster:
    """One single-output regressor per hour of the horizon, fitted one after another with a progress bar."""

    def __init__(self, make_model, name: str):
        self.make_model, self.name = make_model, name

    def fit(self, c: np.ndarray, y: np.ndarray) -> PerHourForecaster:
        hours = tqdm(range(y.shape[1]), desc=f"{self.name}, hour of the horizon", disable=None, leave=False)
        self.models = [self.make_model().fit(c, y[:, h]) for h in hours]
        return self

    def predict(self, c: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(c) for m in self.models], axis=1).astype(np.float32)


@FORECASTERS.register("linear", "ridge regression (scikit-learn Ridge)")
def linear(seed: int = 0, alpha: float = 1.0) -> SklearnForecaster:
    from sklearn.linear_model import Ridge

    return SklearnForecaster(Ridge(alpha=alpha))


@FORECASTERS.register("mlp", "multi-layer perceptron (scikit-learn MLPRegressor with the authors' settings)")
def mlp(seed: int = 0, hidden: tuple[int, ...] = (100,), activation: str = "relu",
        batch_size: int = 64) -> SklearnForecaster:
    """The authors' MLP (their ``create_modules``): batch 64, at most 350 epochs, early stopping on a held-out
    20% after 10 epochs without improvement."""
    from sklearn.neural_network import MLPRegressor

    return SklearnForecaster(MLPRegressor(hidden_layer_sizes=hidden, activation=activation, batch_size=batch_size,
                                          max_iter=350, early_stopping=True, validation_fraction=0.2,
                                          n_iter_no_change=10, tol=1e-4, random_state=seed))


@FORECASTERS.register("svr", "support vector regression, one per hour (scikit-learn SVR, rbf kernel)")
def svr(seed: int = 0, C: float = 1.0, epsilon: float = 0.1, kernel: str = "rbf") -> PerHourForecaster:  # noqa: N803
    from sklearn.metrics.pairwise import laplacian_kernel
    from sklearn.svm import SVR

    chosen = laplacian_kernel if kernel == "laplacian" else kernel  # scikit-learn's SVR takes it as a callable
    return PerHourForecaster(lambda: SVR(C=C, epsilon=epsilon, kernel=chosen), "svr")


@FORECASTERS.register("gbt", "gradient-boosted trees, one per hour (LightGBM, default hyperparameters)")
def gbt(seed: int = 0, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = -1,
        subsample: float = 1.0) -> PerHourForecaster:
    from lightgbm import LGBMRegressor

    return PerHourForecaster(lambda: LGBMRegressor(n_estimators=n_estimators, learning_rate=learning_rate,
                                                   max_depth=max_depth, subsample=subsample,
                                                   subsample_freq=1 if subsample < 1 else 0, random_state=seed,
                                                   verbose=-1, n_jobs=1), "gbt")


@FORECASTERS.register("ets", "exponential smoothing with a daily season (statsmodels state-space ETS)")
def ets(seed: int = 0, trend: bool = False, damped_trend: bool = False, seasonal: bool = True) -> SeriesForecaster:
    from .statespace import exponential_smoothing

    return exponential_smoothing(trend=trend, damped_trend=damped_trend, seasonal=seasonal)


@FORECASTERS.register("sarimax", "seasonal ARIMA (2,0,1)(1,0,1)24 with the exogenous features (statsmodels)")
def sarimax(seed: int = 0, order: tuple[int, int, int] = (2, 0, 1),
            seasonal_order: tuple[int, int, int] = (1, 0, 1)) -> SeriesForecaster:
    from .statespace import seasonal_arimax

    return seasonal_arimax(order, seasonal_order)


@FORECASTERS.register("nhits", "N-HiTS (Challu et al. 2023), written here in torch, default hyperparameters")
def nhits(seed: int = 0, width: int = 512, layers: int = 2, dropout: float = 0.0) -> PointForecaster:
    from .nhits import NHiTSForecaster

    return NHiTSForecaster(seed=seed, width=width, layers=layers, dropout=dropout)


def make_forecaster(name: str, seed: int = 0, **hyperparameters) -> PointForecaster | SeriesForecaster:
    """The forecaster ``name`` with its defaults, or with ``hyperparameters`` (the keywords of its factory)."""
    return FORECASTERS.get(name)(seed=seed, **hyperparameters)
