"""AutoPQ: quantile forecasts from any point forecast with a conditional invertible network.

Meisenbacher, Phipps, Taubert, Weiel, Götz, Mikut, Hagenmeyer (2024), "AutoPQ: Automating Quantile
estimation from Point forecasts in the context of sustainability", arXiv 2412.00419; Phipps et al. (2024),
"Creating probabilistic forecasts from arbitrary deterministic forecasts using conditional invertible
neural networks". Three parts with small interfaces: a point forecaster (:mod:`.forecasters`), the cINN
(:mod:`.cinn`) and the sampler that turns ``(ŷ, c, σ)`` into quantiles (:mod:`.quantiles`); the σ search
(:mod:`.search`) sits on top and scores by validation CRPS (:mod:`.scores`). Windows: :mod:`.series`.
Needs the ``autopq`` extra (FrEIA, Optuna, LightGBM, pandas).
"""

from .forecasters import FORECASTERS, PointForecaster, make_forecaster
from .run import AutoPQConfig, run_autopq
from .series import SOURCES, Series, load_series, make_windows, read_csv_series

__all__ = ["FORECASTERS", "SOURCES", "AutoPQConfig", "PointForecaster", "Series", "load_series", "make_forecaster",
           "make_windows", "read_csv_series", "run_autopq"]
