"""One AutoPQ-default run: data, point forecaster, cINN, σ search, test quantiles, baselines, outputs.

:class:`AutoPQConfig` declares every setting once (its ``beyondbp autopq`` flag and help come from it);
:func:`run_autopq` does what the command does and returns the summary.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..energy import DEFAULT_WATTS_PER_CORE, EnergyMeter, kwh
from ..errors import BeyondBPError
from ..folders import output_folder
from ..options import check_choices, option
from ..tables import write_rows
from .calendar import AUTHORS_REGION, NO_HOLIDAYS, check_region
from .choice import SAMPLERS, candidates, chosen, fit_samplers
from .cinn import CINNSettings, ConditionalINN, train_cinn
from .conditioned import out_of_fold, with_forecasts
from .forecasters import FORECASTERS, PointForecaster, SeriesForecaster, make_forecaster, point_forecasts
from .quantiles import BASELINES, finish
from .scores import LEVELS, scores
from .search import SIGMA_RANGE
from .series import HISTORY_LAG, SOURCES, Series, Splits, load_series, make_windows, read_csv_series

SUMMARY_NAME = "summary.json"
#: The settings that decide the series and its windows (and so the cINN trained on them).
SERIES_FIELDS = ("dataset", "data_dir", "csv", "time", "target", "features", "stride", "holidays", "history_lag")
#: ``--holidays`` value for each paper series' own region.
OWN_REGION = "series"
#: The methods drawn in the reliability plot beside the baselines.
PLOTTED = ("autopq", "autopq-faithful")


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
    lower: float | None = option(None, "data", "the target's physical minimum (quantiles are clipped to it); "
                                               "the paper's series have theirs (see 'beyondbp list')")
    upper: float | None = option(None, "data", "the target's physical maximum (quantiles are clipped to it)")
    stride: int = option(1, "data", "hours between forecast origins")
    holidays: str = option(AUTHORS_REGION, "data", f"public holidays that are not workdays in the calendar conditions: "
                                                   f"a region as COUNTRY or COUNTRY-SUBDIVISION (DE-BW, US-DC), "
                                                   f"'{OWN_REGION}' (each paper series' own), or '{NO_HOLIDAYS}'; "
                                                   f"the authors use DE for every series", metavar="REGION")
    history_lag: int = option(HISTORY_LAG, "data", "hours between a target hour and the past value given for it "
                                                   "(the authors' 25; 24 gives the latest hour too)", metavar="HOURS")
    forecaster: str = option("mlp", "AutoPQ", "point forecaster; see 'beyondbp list'")
    trials: int = option(100, "AutoPQ", "at most this many trials in each sampler's search")
    patience: int = option(20, "AutoPQ", "stop our samplers' search when the best has not improved for this many "
                                         "trials (the faithful one stops at the authors' plateau)")
    sampler: str = option("auto", "AutoPQ", "faithful: the paper's z_hat * N(1, sigma^2); additive: z_hat + "
                                            "sigma_h N(0, 1); mix: rho z_hat + sqrt(1 - rho^2) N(0, 1); +conformal: "
                                            "then calibrated on the validation windows; auto: the lowest "
                                            "validation CRPS of all six", choices=SAMPLERS)
    search_every: int = option(1, "AutoPQ", "the searches score every k-th validation window (1: all of them, as "
                                            "the authors; each chosen sampler is then scored on all)",
                               metavar="K")
    sigma_low: float = option(SIGMA_RANGE[0], "AutoPQ", "smallest sigma searched")
    sigma_high: float = option(SIGMA_RANGE[1], "AutoPQ", "largest sigma searched")
    samples: int = option(100, "AutoPQ", "samples per window drawn through the cINN")
    levels: tuple[float, ...] = option(tuple(LEVELS.tolist()), "AutoPQ", "quantile levels, increasing, between 0 "
                                                                          "and 1 (the paper's 17)", metavar="L1,L2")
    cinn_epochs: int = option(CINNSettings.epochs, "AutoPQ", "cINN training epochs")
    cinn_init_std: float = option(CINNSettings.init_std, "AutoPQ", "coupling parameters start as this times "
                                                                    "N(0, 1) (the authors' 0.01)")
    cinn_forecast: bool = option(False, "AutoPQ", "condition the cINN on the point forecast too (ours): trained on "
                                                  "out-of-fold forecasts of the training windows, it learns the "
                                                  "forecaster's errors (a forecaster of windows; not shared "
                                                  "between forecasters)")
    cinn_keep: str = option(CINNSettings.keep, "AutoPQ", "the cINN's weights kept: the last epoch's (the "
                                                         "authors') or the best held-out epoch's",
                            choices=("last", "best"))
    baselines: tuple[str, ...] = option(("gaussian", "conformal", "quantile-gbt"), "AutoPQ",
                                        "baselines on the same point forecast", metavar="NAMES")
    seed: int = option(0, "AutoPQ", "random seed (forecaster, cINN, sampling, search)")
    device: str = option("cpu", "AutoPQ", "cpu, cuda or cuda:N for the cINN")
    watts_per_core: float = option(DEFAULT_WATTS_PER_CORE, "energy", "energy estimate where RAPL is not "
                                                                    "readable: watts per busy CPU core")
    price_per_kwh: float = option(0.3, "energy", "price of one kWh (any currency): the run's cost is kWh x price")

    def validate(self) -> None:
        check_choices(self)
        if (self.dataset is None) == (self.csv is None):
            raise BeyondBPError("give either dataset (one of the paper's series) or csv (your own series)")
        if self.dataset is not None and self.dataset not in SOURCES:
            raise BeyondBPError(f"unknown AutoPQ data set '{self.dataset}'; known: {', '.join(SOURCES)}")
        if self.csv is not None and self.target is None:
            raise BeyondBPError("csv needs target (the column to forecast)")
        FORECASTERS.get(self.forecaster)
        for name in self.baselines:
            BASELINES.get(name)
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise BeyondBPError(f"lower must lie below upper, got {self.lower} and {self.upper}")
        if not self.watts_per_core > 0 or self.price_per_kwh < 0:
            raise BeyondBPError(f"watts per core must be positive and the price per kWh not negative, got "
                                f"{self.watts_per_core} and {self.price_per_kwh}")
        if not self.cinn_init_std > 0:
            raise BeyondBPError(f"cinn_init_std must be positive, got {self.cinn_init_std}")
        levels = np.asarray(self.levels, dtype=float)
        if len(levels) < 2 or not ((0 < levels) & (levels < 1)).all() or not (np.diff(levels) > 0).all():
            raise BeyondBPError(f"quantile levels must be at least two numbers strictly between 0 and 1, "
                                f"increasing; got {', '.join(map(str, self.levels))}")
        if not 0 < self.sigma_low < self.sigma_high:
            raise BeyondBPError(f"sigma bounds must satisfy 0 < low < high, got {self.sigma_low} and {self.sigma_high}")
        if self.holidays == OWN_REGION and self.dataset is None:
            raise BeyondBPError(f"holidays '{OWN_REGION}' names a paper series' own region; for your CSV give a "
                                f"region (COUNTRY or COUNTRY-SUBDIVISION, e.g. DE-BW) or '{NO_HOLIDAYS}'")
        check_region(self.holiday_region())
        for name in ("trials", "patience", "samples", "cinn_epochs", "stride", "search_every"):
            if getattr(self, name) < 1:
                raise BeyondBPError(f"{name} must be at least 1, got {getattr(self, name)}")

    def series_name(self) -> str:
        """The paper's series name, or the stem of the user's CSV file."""
        return self.dataset or Path(self.csv).stem

    def holiday_region(self) -> str:
        """The region whose public holidays the calendar conditions use."""
        return SOURCES[self.dataset].region if self.holidays == OWN_REGION else self.holidays

    def windows(self, series: Series) -> Splits:
        """``series`` cut into windows with these settings."""
        return make_windows(series, self.stride, self.holiday_region(), self.history_lag)

    def series(self) -> Series:
        """The series, with ``lower``/``upper`` (where given) replacing its physical range."""
        if self.dataset is not None:
            series = load_series(self.dataset, self.data_dir, self.download)
        else:
            series = read_csv_series(self.csv, self.target, tuple(self.features), self.time,
                                     start=None if self.time else "2000-01-01 00:00")
        given = (self.lower, self.upper)
        series.bounds = tuple(new if new is not None else old for new, old in zip(given, series.bounds))
        return series


def completed_run(out: Path, config: AutoPQConfig) -> dict[str, Any] | None:
    """The summary of a finished run in ``out`` made with ``config``'s settings, or None. A setting added
    after the run was made counts as run with its default."""
    return matching_summary(out / SUMMARY_NAME, config)


def matching_summary(path: Path, config: AutoPQConfig) -> dict[str, Any] | None:
    """The run summary stored in the file ``path`` if it was made with ``config``'s settings, else None."""
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    current = json.loads(json.dumps(asdict(config)))
    defaults = json.loads(json.dumps(asdict(type(config)())))
    stored = {**defaults, **summary["settings"]}
    return summary if stored == current else None


def conditional_inn(config: AutoPQConfig, splits: Splits, progress: bool, cache: Path | None,
                    meter: EnergyMeter) -> tuple[ConditionalINN, dict[str, Any]]:
    """The cINN for ``config``'s series and seed: trained here, or read from ``cache`` when that file holds one
    trained with the same data, seed and settings (the cINN never sees the point forecast, so every
    forecaster of a series and seed can share it). Returns it and ``{"best_epoch", "seconds", "joules",
    "reused"}`` (the time and energy its training took, here or in the run that cached it)."""
    settings = CINNSettings(epochs=config.cinn_epochs, init_std=config.cinn_init_std, keep=config.cinn_keep)
    key = {"series": {k: v for k, v in asdict(config).items() if k in SERIES_FIELDS}, "seed": config.seed,
           "settings": asdict(settings), "windows": len(splits.train)}
    net = ConditionalINN(splits.train.y.shape[1], splits.train.c.shape[1], settings, config.seed)
    if cache is not None and cache.is_file():
        stored = torch.load(cache, map_location="cpu", weights_only=False)
        if stored["key"] == key:
            net.load_state_dict(stored["state"])
            return net.to(config.device).eval(), {"joules": 0.0, **stored["record"], "reused": True}
    started, joules = time.perf_counter(), meter.joules()
    net, history = train_cinn(splits.train.c, splits.train.y, settings, config.seed, config.device, progress)
    record = {"best_epoch": int(np.argmin([h["held_out_nll"] for h in history])) + 1,
              "seconds": time.perf_counter() - started, "joules": meter.joules() - joules}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        torch.save({"key": key, "state": net.state_dict(), "record": record}, partial)
        partial.replace(cache)
    return net, {**record, "reused": False}


def run_autopq(config: AutoPQConfig, out_dir: Path | str | None = None, progress: bool = True,
               forecaster: PointForecaster | SeriesForecaster | None = None,
               series: Series | None = None, cinn_cache: Path | str | None = None) -> dict[str, Any]:
    """Train and evaluate; with ``out_dir``, write ``quantiles.csv`` (the 17 quantiles of every test hour, in
    original units), ``metrics.csv`` (AutoPQ and each baseline), ``trials.csv``, ``summary.json``, a fan
    chart and a reliability plot. ``forecaster`` replaces the named one: any object with ``fit(c, y)`` and
    ``predict(c)``, or with ``fit_series`` and ``predict_origins`` (see :mod:`.forecasters`). ``cinn_cache``:
    a file where the trained cINN is kept for runs of other forecasters on the same series and seed."""
    config.validate()
    if out_dir is not None:
        output_folder(out_dir, "out")
    started, meter = time.perf_counter(), EnergyMeter(config.device, config.watts_per_core)
    torch.manual_seed(config.seed)
    series = series if series is not None else config.series()
    splits = config.windows(series)
    levels = np.asarray(config.levels)
    names, left_out = candidates(config.sampler, len(splits.validation), levels)
    label = config.forecaster if forecaster is None else type(forecaster).__name__
    forecaster = forecaster if forecaster is not None else make_forecaster(config.forecaster, config.seed)
    train_forecasts = out_of_fold(copy.deepcopy(forecaster), splits) if config.cinn_forecast else None
    y_hat = point_forecasts(forecaster, splits)
    flow_splits, cache = splits, None if cinn_cache is None else Path(cinn_cache)
    if config.cinn_forecast:  # the cINN learns p(y | c, y_hat) from out-of-fold forecasts; its own, not shared
        flow_splits, cache = with_forecasts(splits, {**y_hat, "train": train_forecasts}), None
    net, cinn = conditional_inn(config, flow_splits, progress, cache, meter)
    fitted, trials = fit_samplers(names, config, net, flow_splits, y_hat, progress)
    best = chosen(fitted)
    quantiles = {"autopq": best.test, **({f"autopq-{name}": f.test for name, f in fitted.items()}
                                         if len(fitted) > 1 else {})}
    quantiles.update(baseline_quantiles(config, splits, y_hat))
    metrics = {name: scores(splits.test.y, q, levels) for name, q in quantiles.items()}
    summary = {"settings": asdict(config), "series": series.name, "forecaster": label,
               "sampler": best.name, "parameters": best.parameters, "validation_crps": best.validation_crps,
               "samplers": {name: {"parameters": f.parameters, "validation_crps": f.validation_crps}
                            for name, f in fitted.items()}, "left_out": left_out, "trials": len(trials),
               "cinn_epochs_best": cinn["best_epoch"], "cinn_seconds": cinn["seconds"], "cinn_reused": cinn["reused"],
               "windows": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
               "metrics": metrics, "wall_seconds": time.perf_counter() - started}
    # the run's cost: its own time and energy, plus its cINN's training where that happened in an earlier run
    summary["cost_seconds"] = summary["wall_seconds"] + (cinn["seconds"] if cinn["reused"] else 0.0)
    joules = meter.joules() + (cinn["joules"] if cinn["reused"] else 0.0)
    summary.update(energy_joules=joules, energy_kwh=kwh(joules), energy_cost=kwh(joules) * config.price_per_kwh,
                   energy_source=meter.source)
    if out_dir is not None:
        write_outputs(Path(out_dir), splits, y_hat["test"], quantiles, metrics, trials, summary)
    return summary


def baseline_quantiles(config: AutoPQConfig, splits: Splits, y_hat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each of ``config.baselines`` on the test windows, fitted on the validation windows' point forecasts."""
    residuals = splits.validation.y - y_hat["validation"]
    return {name: finish(BASELINES.get(name)(y_hat["test"], residuals, np.asarray(config.levels), c=splits.test.c,
                                             fit_c=splits.validation.c, fit_y_hat=y_hat["validation"],
                                             fit_y=splits.validation.y, seed=config.seed), splits.low, splits.high)
            for name in config.baselines}


def write_outputs(out: Path, splits: Splits, y_hat: np.ndarray, quantiles: dict[str, np.ndarray],
                  metrics: dict[str, dict[str, float]], trials: list[dict], summary: dict[str, Any]) -> None:
    from .plots import fan_chart, reliability_plot

    out.mkdir(parents=True, exist_ok=True)
    q = splits.original(quantiles["autopq"])
    hours = splits.test.start[:, None] + np.arange(q.shape[1]) * np.timedelta64(1, "h")
    rows = [{"origin": str(splits.test.start[i]), "time": str(hours[i, h]), "truth": float(truth[h]),
             "point": float(point[h]), **{level_name(level): float(q[i, h, k])
                                          for k, level in enumerate(summary["settings"]["levels"])}}
            for i, (truth, point) in enumerate(zip(splits.original(splits.test.y), splits.original(y_hat)))
            for h in range(q.shape[1])]
    write_rows(rows, out / "quantiles.csv")
    write_rows([{"method": name, **values} for name, values in metrics.items()], out / "metrics.csv")
    write_rows(trials, out / "trials.csv", dict.fromkeys(k for t in trials for k in t))  # samplers differ in params
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    levels = np.asarray(summary["settings"]["levels"])
    fan_chart(splits, y_hat, quantiles["autopq"], levels, out / "fan.png", summary["series"])
    plotted = {name: q for name, q in quantiles.items() if name in PLOTTED or not name.startswith("autopq")}
    reliability_plot(splits.test.y, plotted, levels, out / "reliability.png")


def level_name(level: float) -> str:
    """The column of a quantile level in ``quantiles.csv``: ``q01`` … ``q99``, ``q2.5`` for 0.025."""
    percent = level * 100
    return f"q{round(percent):02d}" if abs(percent - round(percent)) < 1e-9 else f"q{percent:g}"
