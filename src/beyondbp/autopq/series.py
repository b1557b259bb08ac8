"""Hourly series for AutoPQ: the paper's six data sets, a user's own CSV, and their 24-hour windows.

A :class:`Series` is an hourly target with optional exogenous features and a timestamp per hour.
:func:`make_windows` is the one place that cuts it into forecasting windows (Meisenbacher et al.
2024, AutoPQ; Phipps et al. 2024): for every forecast origin, the target ``y`` is the next 24 hours
and the conditions ``c`` are 24 past values of the target, the exogenous features over the 24 target
hours, and the calendar of every target hour (:mod:`.calendar`: hour of day and month as sine/cosine,
workday or not: 5 values per hour, 120 in all). As in the authors' code (``ClockShift(25)`` before the
24-hour sampler), the past value given for target hour ``h`` is the target ``history_lag`` = 25 hours
before it, so the history ends two hours before the first target hour. Everything is standardised with
the training part's statistics only; the splits are chronological (the last 20% is the test set, the
last 30% of the rest the validation set).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.files import locate_or_fetch
from ..errors import BeyondBPError
from .calendar import AUTHORS_REGION, NO_HOLIDAYS, calendar_features

HORIZON = 24
#: The authors' lag between a target hour and the past value given for it.
HISTORY_LAG = HORIZON + 1
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.3


@dataclass(frozen=True)
class SeriesSource:
    """Where one of the paper's series lives and how its file is laid out."""

    file: str
    target: str
    features: tuple[str, ...]
    time: str | None  # the timestamp column; None: hourly from ``start``
    start: str | None = None
    rows: int | None = None  # the paper uses only the first ``rows``
    bounds: tuple[float | None, float | None] = (None, None)  # the target's physical range (None: open)
    description: str = ""
    region: str = NO_HOLIDAYS  # the series' own holiday region (:mod:`.calendar`)


SOURCES: dict[str, SeriesSource] = {
    "Load-BW": SeriesSource("Load-BW.csv", "load_power_statistics", (), "time", bounds=(0.0, None),
                            description="OPSD electrical load of Baden-Wuerttemberg, 2018", region="DE-BW"),
    "Load-GCP": SeriesSource("Load-GCP.csv", "MT_158", (), "time", rows=26_280, bounds=(0.0, None),
                             description="UCI ElectricityLoadDiagrams20112014, client MT_158, hourly",
                             region="PT"),
    "Mobility": SeriesSource("Mobility.csv", "cnt", ("temp", "hum", "windspeed", "weathersit"), "time",
                             bounds=(0.0, None), region="US-DC",
                             description="UCI Bike Sharing (Washington D.C.), hourly rentals with weather"),
    "PV": SeriesSource("PV.csv", "POWER", ("SSRD", "TCC"), None, start="2012-04-01 01:00", bounds=(0.0, 1.0),
                       description="GEFCom2014 solar track, zone 1"),
    "Price": SeriesSource("Price.csv", "Zonal Price", ("Forecasted Total Load", "Forecasted Zonal Load"), None,
                          start="2011-01-01 00:00", description="GEFCom2014 price track"),
    "WP": SeriesSource("WP.csv", "TARGETVAR", ("U100", "V100", "Speed100"), None, start="2012-01-01 01:00",
                       bounds=(0.0, 1.0), description="GEFCom2014 wind track"),
}


@dataclass
class Series:
    """An hourly target (``[T]``), its features (``[T, F]``) and timestamps (numpy datetime64, ``[T]``)."""

    name: str
    target: np.ndarray
    features: np.ndarray
    time: np.ndarray
    feature_names: tuple[str, ...] = ()
    bounds: tuple[float | None, float | None] = (None, None)  # physical range of the target (None: open)


def read_csv_series(path: Path | str, target: str, features: tuple[str, ...] = (), time: str | None = None,
                    start: str | None = None, rows: int | None = None, name: str | None = None,
                    bounds: tuple[float | None, float | None] = (None, None)) -> Series:
    """A series from a CSV file: ``time`` names the timestamp column (increasing, no duplicates), or the
    rows are hourly from ``start``. Rows whose target is missing at the ends are dropped; gaps inside are
    interpolated linearly, with a warning that says how many. ``bounds``: the target's physical range."""
    low, high = bounds
    if low is not None and high is not None and not low < high:
        raise BeyondBPError(f"the target's lower bound must lie below its upper bound, got {low} and {high}")
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BeyondBPError(f"series file {path} does not exist")
    frame = pd.read_csv(path)
    missing = [c for c in (target, *features, *([time] if time else [])) if c not in frame.columns]
    if missing:
        raise BeyondBPError(f"{path} has no column {', '.join(repr(c) for c in missing)}; its columns: "
                            f"{', '.join(map(str, frame.columns))}")
    if rows is not None:
        frame = frame.iloc[:rows]
    refuse_text(path, frame, [target, *features])
    if time is not None:
        stamps = pd.to_datetime(frame[time], errors="coerce")
        if stamps.isna().any():
            raise BeyondBPError(f"{path}, column '{time}': row {int(stamps.isna().argmax()) + 2} is not a timestamp")
        if not stamps.is_monotonic_increasing or stamps.duplicated().any():
            raise BeyondBPError(f"{path}, column '{time}': timestamps must be increasing without duplicates")
        frame = frame.set_index(stamps).drop(columns=[time])
        frame = frame[~frame.index.duplicated()].asfreq("h")  # missing hours become gaps
    else:
        frame = frame.dropna(how="all", subset=[target, *features])
        frame.index = pd.date_range(start, periods=len(frame), freq="h")
    values = frame[[target, *features]].apply(pd.to_numeric, errors="coerce")
    empty = [c for c in values.columns if values[c].isna().all()]
    if empty:
        raise BeyondBPError(f"{path}: column '{empty[0]}' holds no number")
    gaps = int(values.isna().to_numpy().sum())
    if gaps:
        values = values.interpolate(limit_area="inside")
        warnings.warn(f"{path.name}: {gaps} missing values interpolated linearly", stacklevel=2)
    values = values.dropna()  # leading and trailing gaps
    return Series(name or path.stem, values[target].to_numpy(np.float64), values[list(features)].to_numpy(np.float64),
                  values.index.to_numpy(), tuple(features), bounds)


def refuse_text(path: Path, frame, columns: list[str]) -> None:
    """A cell of ``columns`` that holds something other than a number or nothing is an error naming its line:
    only empty cells are gaps to interpolate."""
    import pandas as pd

    for column in columns:
        raw = frame[column]
        text = raw.astype(str).str.strip()
        bad = raw.notna() & (text != "") & pd.to_numeric(raw, errors="coerce").isna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise BeyondBPError(f"{path}, line {row + 2}, column '{column}': '{raw.iloc[row]}' is not a number (an "
                                f"empty cell is a gap to interpolate; anything else must be a number)")


def load_series(name: str, data_dir: str | None = None, download: bool = False) -> Series:
    """One of the paper's six series by name (see :data:`SOURCES`), from ``data_dir`` (or fetched)."""
    if name not in SOURCES:
        raise BeyondBPError(f"unknown AutoPQ data set '{name}'; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    hint = (f"give --data-dir the folder that holds {source.file} (a copy of the AutoPQ series, e.g. "
            f"../shared/data/autopq), fetch the original ({source.description}) with --download, or give your "
            f"own file with --csv")

    def fetch(folder: Path) -> None:
        from .download import fetch_series

        fetch_series(name, source.file, folder)

    path = locate_or_fetch("autopq", [source.file], data_dir, hint, download, fetch)[source.file]
    return read_csv_series(path, source.target, source.features, source.time, source.start, source.rows, name,
                           source.bounds)


@dataclass
class Windows:
    """Forecasting windows: conditions ``c`` ``[N, n_c]``, targets ``y`` ``[N, 24]`` (standardised), and the
    timestamp and the hour index (in the series) of each window's first target hour."""

    c: np.ndarray
    y: np.ndarray
    start: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, rows) -> Windows:
        return Windows(self.c[rows], self.y[rows], self.start[rows], self.origin[rows])


@dataclass
class Splits:
    """Training, validation and test windows, the whole standardised series (for forecasters that model the
    series, :class:`~beyondbp.autopq.forecasters.SeriesForecaster`), and how to return to the original scale."""

    train: Windows
    validation: Windows
    test: Windows
    mean: float
    std: float
    low: float  # the target's physical range, normalised (quantiles are clipped to it; ±inf where open)
    high: float
    target: np.ndarray  # [T], standardised with the training part's statistics
    features: np.ndarray  # [T, F], standardised likewise
    validation_start: int  # the first hour of the validation part (the training part ends before it)

    def original(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def split_bounds(length: int) -> tuple[int, int]:
    """The hours where validation and test begin: test is the last 20%, validation the last 30% of the rest."""
    test_start = int(round(length * (1 - TEST_FRACTION)))
    return int(round(test_start * (1 - VALIDATION_FRACTION))), test_start


def make_windows(series: Series, stride: int = 1, holidays: str = AUTHORS_REGION,
                 history_lag: int = HISTORY_LAG) -> Splits:
    """Cut ``series`` into windows (origins every ``stride`` hours) and split them chronologically; the
    calendar's workdays leave out the public holidays of ``holidays`` (a region, :mod:`.calendar`).

    A window belongs to the part that holds its first target hour, and only if its 24 target hours
    lie inside that part too, so no target hour is shared between parts.
    """
    if history_lag < HORIZON:
        raise BeyondBPError(f"history_lag must be at least {HORIZON} hours (the past values must lie before the "
                            f"first target hour), got {history_lag}")
    length = len(series.target)
    validation_start, test_start = split_bounds(length)
    parts = (validation_start, test_start - validation_start, length - test_start)
    if parts[0] < 4 * HORIZON or min(parts[1:]) < 2 * HORIZON:
        raise BeyondBPError(f"series '{series.name}' has {length} hours, too short for the splits: training, "
                            f"validation and test get {parts[0]}, {parts[1]} and {parts[2]} hours; they need at "
                            f"least {4 * HORIZON}, {2 * HORIZON} and {2 * HORIZON}")
    if stride < 1:
        raise BeyondBPError(f"stride must be at least 1 hour, got {stride}")
    mean, std = series.target[:validation_start].mean(), series.target[:validation_start].std() or 1.0
    target = (series.target - mean) / std
    features = series.features
    if features.shape[1]:
        f_mean, f_std = features[:validation_start].mean(0), features[:validation_start].std(0)
        features = (features - f_mean) / np.where(f_std > 0, f_std, 1.0)
    cal = calendar_features(series.time, holidays)

    def part(begin: int, end: int) -> Windows:
        origins = np.arange(max(begin, history_lag), end - HORIZON + 1, stride)
        hours = origins[:, None] + np.arange(HORIZON)
        past = target[hours - history_lag]
        exogenous = features[hours].reshape(len(origins), -1)
        c = np.concatenate([past, exogenous, cal[hours].reshape(len(origins), -1)], axis=1)
        return Windows(c.astype(np.float32), target[hours].astype(np.float32), series.time[origins], origins)

    low, high = ((math.inf * side if bound is None else (bound - mean) / std)
                 for side, bound in zip((-1, 1), series.bounds))
    return Splits(part(0, validation_start), part(validation_start, test_start), part(test_start, length),
                  float(mean), float(std), float(low), float(high), target, features, validation_start)
