"""One AutoPQ-default run: data, point forecaster, cINN, σ search, test quantiles, baselines, outputs.

:class:`AutoPQConfig` declares every setting once (its ``beyondbp autopq`` flag and help come from it);
:func:`run_autopq` does what the command does and returns the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BeyondBPError
from ..options import option
from ..tables import write_rows
from .cinn import CINNSettings, train_cinn
from .forecasters import FORECASTERS, PointForecaster, make_forecaster
from .quantiles import BASELINES, LATENT_NOISE, CINNSampler, finish
from .scores import LEVELS, scores
from .search import SIGMA_RANGE, search_sigma
from .series import SOURCES, Series, Splits, load_series, make_windows, read_csv_series

SUMMARY_NAME = "summary.json"


@dataclass
class AutoPQConfig:
    """Every setting of one AutoPQ-default run."""

    dataset: str | None = option(None, "data", f"one of the paper's series: {', '.join(SOURCES)}")
    data_dir: str | None = option(None, "data", "the folder with the series' CSV files (e.g. ../shared/data/autopq)")
    download: bool = option(False, "data", "download missing files")
    csv: str | None = option(None, "data", "your own hourly series instead: a CSV file (with --time, --target)",
                             metavar="PATH")
    time: str | None = option(None, "data", "--csv: the timestamp column (without one, rows are taken as hourly "
                                            "from 2000-01-01, so the calendar features mean nothing)",
                              metavar="COLUMN")
    target: str | None = option(None, "data", "--csv: the target column", metavar="COLUMN")
    features: tuple[str, ...] = option((), "data", "--csv: exogenous feature columns, e.g. temp,wind",
                                       metavar="A,B")
    stride: int = option(1, "data", "hours between forecast origins")
    forecaster: str = option("mlp", "AutoPQ", "point forecaster; see 'beyondbp list'")
    trials: int = option(100, "AutoPQ", "at most this many sigma trials")
    patience: int = option(20, "AutoPQ", "stop the search when the best sigma has not improved for this many trials")
    sigma_low: float = option(SIGMA_RANGE[0], "AutoPQ", "smallest sigma searched")
    sigma_high: float = option(SIGMA_RANGE[1], "AutoPQ", "largest sigma searched")
    samples: int = option(100, "AutoPQ", "samples per window drawn through the cINN")
    noise: str = option("multiplicative", "AutoPQ", "latent samples: the paper's z_hat * N(1, sigma^2), or "
                                                     "z_hat + N(0, sigma^2)", choices=LATENT_NOISE)
    cinn_epochs: int = option(CINNSettings.epochs, "AutoPQ", "cINN training epochs")
    baselines: tuple[str, ...] = option(("gaussian", "conformal", "quantile-gbt"), "AutoPQ",
                                        "baselines on the same point forecast", metavar="NAMES")
    seed: int = option(0, "AutoPQ", "random seed (forecaster, cINN, sampling, search)")
    device: str = option("cpu", "AutoPQ", "cpu, cuda or cuda:N for the cINN")

    def validate(self) -> None:
        if (self.dataset is None) == (self.csv is None):
            raise BeyondBPError("give either dataset (one of the paper's series) or csv (your own series)")
        if self.dataset is not None and self.dataset not in SOURCES:
            raise BeyondBPError(f"unknown AutoPQ data set '{self.dataset}'; known: {', '.join(SOURCES)}")
        if self.csv is not None and self.target is None:
            raise BeyondBPError("csv needs target (the column to forecast)")
        FORECASTERS.get(self.forecaster)
        for name in self.baselines:
            BASELINES.get(name)
        if not 0 < self.sigma_low < self.sigma_high:
            raise BeyondBPError(f"sigma bounds must satisfy 0 < low < high, got {self.sigma_low} and {self.sigma_high}")
        for name in ("trials", "patience", "samples", "cinn_epochs", "stride"):
            if getattr(self, name) < 1:
                raise BeyondBPError(f"{name} must be at least 1, got {getattr(self, name)}")

    def series(self) -> Series:
        if self.dataset is not None:
            return load_series(self.dataset, self.data_dir, self.download)
        return read_csv_series(self.csv, self.target, tuple(self.features), self.time,
                               start=None if self.time else "2000-01-01 00:00")


def run_autopq(config: AutoPQConfig, out_dir: Path | str | None = None, progress: bool = True,
               forecaster: PointForecaster | None = None, series: Series | None = None) -> dict[str, Any]:
    """Train and evaluate; with ``out_dir``, write ``quantiles.csv`` (the 17 quantiles of every test hour, in
    original units), ``metrics.csv`` (AutoPQ and each baseline), ``trials.csv``, ``summary.json``, a fan
    chart and a reliability plot. ``forecaster`` replaces the named one (any object with fit/predict)."""
    config.validate()
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise BeyondBPError(f"out {out_dir} is an existing file, not a folder; choose another path")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    series = series if series is not None else config.series()
    splits = make_windows(series, config.stride)
    low, high = (splits.low - splits.mean) / splits.std, (splits.high - splits.mean) / splits.std
    label = config.forecaster if forecaster is None else type(forecaster).__name__
    forecaster = forecaster if forecaster is not None else make_forecaster(config.forecaster, config.seed)
    forecaster.fit(splits.train.c, splits.train.y)
    y_hat = {part: forecaster.predict(getattr(splits, part).c) for part in ("validation", "test")}
    net, history = train_cinn(splits.train.c, splits.train.y, CINNSettings(epochs=config.cinn_epochs), config.seed,
                              config.device, progress)
    validation = CINNSampler(net, splits.validation.c, y_hat["validation"], config.samples, config.seed,
                             config.device, config.noise)
    sigma, trials = search_sigma(
        lambda s: scores(splits.validation.y, validation.quantiles(s, low, high))["crps"], config.trials,
        (config.sigma_low, config.sigma_high), config.patience, config.seed, progress)
    test = CINNSampler(net, splits.test.c, y_hat["test"], config.samples, config.seed + 1, config.device,
                       config.noise)
    quantiles = {"autopq": test.quantiles(sigma, low, high)}
    residuals = splits.validation.y - y_hat["validation"]
    for name in config.baselines:
        quantiles[name] = finish(BASELINES.get(name)(y_hat["test"], residuals, c=splits.test.c,
                                                     fit_c=splits.validation.c, fit_y_hat=y_hat["validation"],
                                                     fit_y=splits.validation.y, seed=config.seed), low, high)
    metrics = {name: scores(splits.test.y, q) for name, q in quantiles.items()}
    summary = {"settings": asdict(config), "series": series.name, "forecaster": label,
               "sigma": sigma, "trials": len(trials), "validation_crps": min(t["crps"] for t in trials),
               "cinn_epochs_best": int(np.argmin([h["held_out_nll"] for h in history])) + 1,
               "windows": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
               "metrics": metrics, "wall_seconds": time.perf_counter() - started}
    if out_dir is not None:
        write_outputs(Path(out_dir), splits, y_hat["test"], quantiles, metrics, trials, summary)
    return summary


def write_outputs(out: Path, splits: Splits, y_hat: np.ndarray, quantiles: dict[str, np.ndarray],
                  metrics: dict[str, dict[str, float]], trials: list[dict], summary: dict[str, Any]) -> None:
    from .plots import fan_chart, reliability_plot

    out.mkdir(parents=True, exist_ok=True)
    q = splits.original(quantiles["autopq"])
    hours = splits.test.start[:, None] + np.arange(q.shape[1]) * np.timedelta64(1, "h")
    rows = [{"origin": str(splits.test.start[i]), "time": str(hours[i, h]), "truth": float(truth[h]),
             "point": float(point[h]), **{f"q{round(level * 100):02d}": float(q[i, h, k])
                                          for k, level in enumerate(LEVELS)}}
            for i, (truth, point) in enumerate(zip(splits.original(splits.test.y), splits.original(y_hat)))
            for h in range(q.shape[1])]
    write_rows(rows, out / "quantiles.csv")
    write_rows([{"method": name, **values} for name, values in metrics.items()], out / "metrics.csv")
    write_rows(trials, out / "trials.csv")
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    fan_chart(splits, y_hat, quantiles["autopq"], out / "fan.png", summary["series"])
    reliability_plot(splits.test.y, quantiles, out / "reliability.png")
