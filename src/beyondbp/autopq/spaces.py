"""The search spaces of AutoPQ-advanced: each point forecaster's hyperparameters, as the authors' code defines
them (Meisenbacher et al. 2024, their ``ConfigSpace``), suggested through an Optuna trial.

Parameter names carry the forecaster's name (``svr.C``), so that one study holds every forecaster's
parameters without clashes; each function returns the keywords of the forecaster's factory
(:data:`~beyondbp.autopq.forecasters.FORECASTERS`). The MLP's layer count follows the authors' draw
(one layer with probability 1/4, two with 1/2, three with 1/4: a second and third layer exist when their
drawn width, from −80 to 100, reaches 10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def svr(trial) -> dict[str, Any]:
    return {"C": trial.suggest_float("svr.C", 1e-2, 1e2, log=True),
            "epsilon": trial.suggest_float("svr.epsilon", 1e-3, 1.0, log=True),
            "kernel": trial.suggest_categorical("svr.kernel", ["rbf", "laplacian", "sigmoid"])}


def gbt(trial) -> dict[str, Any]:
    return {"n_estimators": trial.suggest_int("gbt.n_estimators", 10, 300),
            "learning_rate": trial.suggest_float("gbt.learning_rate", 1e-2, 1.0, log=True),
            "max_depth": trial.suggest_int("gbt.max_depth", 1, 18),
            "subsample": trial.suggest_float("gbt.subsample", 0.5, 1.0)}


def mlp(trial) -> dict[str, Any]:
    widths = [trial.suggest_int("mlp.units_1", 10, 100), trial.suggest_int("mlp.units_2", -80, 100),
              trial.suggest_int("mlp.units_3", -80, 100)]
    hidden = [widths[0]] + [w for w in widths[1:] if w >= 10]
    return {"hidden": tuple(hidden), "activation": trial.suggest_categorical("mlp.activation",
                                                                             ["logistic", "tanh", "relu"]),
            "batch_size": trial.suggest_categorical("mlp.batch_size", [32, 64, 128])}


def nhits(trial) -> dict[str, Any]:
    return {"width": trial.suggest_int("nhits.hidden_size", 8, 1024, log=True),
            "layers": trial.suggest_int("nhits.layers", 1, 3),
            "dropout": trial.suggest_float("nhits.dropout", 0.0, 0.2)}


def sarimax(trial) -> dict[str, Any]:
    return {"order": (trial.suggest_int("sarimax.p", 0, 5), trial.suggest_int("sarimax.d", 0, 2),
                      trial.suggest_int("sarimax.q", 0, 5)),
            "seasonal_order": (trial.suggest_int("sarimax.P", 0, 2), trial.suggest_int("sarimax.D", 0, 1),
                               trial.suggest_int("sarimax.Q", 0, 2))}


def ets(trial) -> dict[str, Any]:
    return {"trend": trial.suggest_categorical("ets.trend", [False, True]),
            "damped_trend": trial.suggest_categorical("ets.damped_trend", [False, True]),
            "seasonal": trial.suggest_categorical("ets.seasonal", [True, False])}


def linear(trial) -> dict[str, Any]:
    return {"alpha": trial.suggest_float("linear.alpha", 1e-3, 1e3, log=True)}


def naive(trial) -> dict[str, Any]:
    return {}


#: Every forecaster that AutoPQ-advanced can search, with its space.
SPACES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "svr": svr, "gbt": gbt, "mlp": mlp, "nhits": nhits, "sarimax": sarimax, "ets": ets, "linear": linear,
    "naive": naive}
