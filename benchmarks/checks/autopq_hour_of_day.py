"""Conformal shifts grouped by the target's hour of day instead of the horizon hour, on finished runs of suite
autopq: the same cINN, forecaster and sampler parameters as the run's record, only the grouping differs.

Run: .venv/bin/python benchmarks/checks/autopq_hour_of_day.py DATASET FORECASTER SEED [...]  (needs the
suite's run folders: the cINN of each series and seed in runs/bench/autopq/DATASET/cinn-seedS.pt)
"""

from __future__ import annotations

import json
import sys

import numpy as np

from beyondbp.autopq import calibration
from beyondbp.autopq.bench import RESULTS, RUNS, config, load_autopq_suite
from beyondbp.autopq.forecasters import make_forecaster, point_forecasts
from beyondbp.autopq.run import conditional_inn
from beyondbp.autopq.samplers import LATENT_SAMPLERS, CINNQuantiles
from beyondbp.autopq.scores import crps
from beyondbp.energy import EnergyMeter


def hours_of_day(start: np.ndarray) -> np.ndarray:
    """``[N, 24]``: the hour of day of each target hour of each window (``start``: first target hour's time)."""
    first = (start.astype("datetime64[h]").astype(np.int64) % 24)[:, None]
    return (first + np.arange(24)[None]) % 24


def shifts_by(y: np.ndarray, q: np.ndarray, levels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[24 groups, L]``: per group and level, the τ-quantile of ``y − q_τ`` over the (window, hour) pairs."""
    out = np.zeros((24, len(levels)))
    for g in range(24):
        mask = groups == g
        for k, level in enumerate(levels):
            out[g, k] = np.quantile((y - q[..., k])[mask], level)
    return out


def main(dataset: str, forecaster: str, seed: int) -> None:
    suite = load_autopq_suite()
    cfg = config(suite, dataset, forecaster, seed)
    record = json.loads((RESULTS / "runs" / f"{dataset}-{forecaster}-seed{seed}.json").read_text())
    splits = cfg.windows(cfg.series())
    levels, low, high = np.asarray(cfg.levels), splits.low, splits.high
    y_hat = point_forecasts(make_forecaster(forecaster, seed), splits)
    net, _ = conditional_inn(cfg, splits, False, RUNS / dataset / f"cinn-seed{seed}.pt",
                             EnergyMeter(cfg.device, cfg.watts_per_core))
    validation = CINNQuantiles(net, splits.validation.c, y_hat["validation"], low, high, cfg.samples, cfg.seed,
                               cfg.device)
    test = CINNQuantiles(net, splits.test.c, y_hat["test"], low, high, cfg.samples, cfg.seed + 1, cfg.device)
    y_val, y_test = splits.validation.y, splits.test.y
    g_val, g_test = hours_of_day(splits.validation.start), hours_of_day(splits.test.start)
    best_baseline = min(v["crps"] for k, v in record["metrics"].items() if not k.startswith("autopq"))
    for name, fitted in record["samplers"].items():
        if not name.endswith("+conformal"):
            continue
        sampler = LATENT_SAMPLERS[name.removesuffix("+conformal")]
        q_val, q_test = (w.quantiles(sampler, fitted["parameters"], levels) for w in (validation, test))
        by_lead = calibration.calibrate(q_test, calibration.shifts(y_val, q_val, levels), low, high)
        by_hour = calibration.finish(q_test + shifts_by(y_val, q_val, levels, g_val)[g_test], low, high)
        print(f"{dataset} {forecaster} seed{seed} {name:20s} record {record['metrics']['autopq-' + name]['crps']:.4f}"
              f"  by lead {crps(y_test, by_lead, levels):.4f}  by hour of day {crps(y_test, by_hour, levels):.4f}"
              f"  best baseline {best_baseline:.4f}", flush=True)


if __name__ == "__main__":
    for i in range(1, len(sys.argv), 3):
        main(sys.argv[i], sys.argv[i + 1], int(sys.argv[i + 2]))
