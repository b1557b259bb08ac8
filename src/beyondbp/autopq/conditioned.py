"""A cINN conditioned on the point forecast itself (ours, not the paper's).

AutoPQ's cINN learns ``p(y | c)`` and never sees the forecast: how wrong a forecaster tends to be is left to
the sampler's spread. Here the conditions of every window also hold its point forecast, ``[c, ŷ]``, so the
flow learns ``p(y | c, ŷ)``, the forecaster's errors where they occur. The forecasts it is trained on must be
out of sample, as the validation and test forecasts are: the training windows are cut into chronological
folds, and each fold is forecast by a copy of the forecaster fitted on the other folds (cross-fitting).
The cINN then depends on the forecaster, so it is not shared between forecasters.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..errors import BeyondBPError
from .series import Splits, Windows

#: Chronological folds of the training windows for the out-of-fold forecasts.
FOLDS = 3


def out_of_fold(prototype, splits: Splits, folds: int = FOLDS) -> np.ndarray:
    """``[N_train, 24]``: each fold of the training windows forecast by a copy of the unfitted ``prototype``
    fitted on the other folds."""
    if not all(hasattr(prototype, m) for m in ("fit", "predict")):
        raise BeyondBPError(f"a cINN conditioned on the forecast needs a forecaster of windows (fit and predict) to "
                            f"forecast the training windows out of sample; {type(prototype).__name__} models the "
                            f"whole series")
    train = splits.train
    forecasts = np.empty_like(train.y)
    for fold in np.array_split(np.arange(len(train)), folds):
        rest = np.setdiff1d(np.arange(len(train)), fold)
        model = copy.deepcopy(prototype).fit(train.c[rest], train.y[rest])
        forecasts[fold] = np.asarray(model.predict(train.c[fold]), dtype=np.float32).reshape(len(fold), -1)
    return forecasts


def with_forecasts(splits: Splits, forecasts: dict[str, np.ndarray]) -> Splits:
    """``splits`` whose windows' conditions end with their point forecasts (``forecasts`` per part), clipped to
    the physical range as the forecast is before it enters the cINN."""
    def part(windows: Windows, y_hat: np.ndarray) -> Windows:
        clipped = np.clip(y_hat, splits.low, splits.high).astype(np.float32)
        return dataclasses.replace(windows, c=np.concatenate([windows.c, clipped], axis=1))

    return dataclasses.replace(splits, **{name: part(getattr(splits, name), forecasts[name])
                                          for name in ("train", "validation", "test")})
