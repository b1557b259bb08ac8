"""``beyondbp autopq`` (AutoPQ-default) and ``beyondbp autopq-advanced`` (the joint search by many workers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..options import add_options, from_args
from .advanced import AdvancedConfig, run_advanced
from .run import AutoPQConfig, run_autopq


def add(commands, output_folder) -> None:
    """The two commands; ``output_folder`` checks ``--out`` as every command does."""
    for name, config_class, help, default in (
        ("autopq", AutoPQConfig, "quantile forecasts from a point forecast (AutoPQ-default)",
         "runs/autopq-DATA-FORECASTER-seedS"),
        ("autopq-advanced", AdvancedConfig, "AutoPQ-advanced: forecaster, hyperparameters and sampler searched "
                                            "together by many workers (Optuna)", "runs/autopq-advanced-DATA-seedS"),
    ):
        parser = commands.add_parser(name, help=help)
        parser.add_argument("--out", type=Path, help=f"output folder (default {default})")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        add_options(parser, config_class)
        parser.set_defaults(handler=lambda args, c=config_class: command(args, c, output_folder),
                            continues="the same command continues the search" if config_class is AdvancedConfig
                            else None)


def command(args: argparse.Namespace, config_class: type, output_folder) -> int:
    config = from_args(config_class, args)
    config.validate()
    if config_class is AutoPQConfig:
        name = f"autopq-{config.series_name()}-{config.forecaster}-seed{config.seed}"
        out = output_folder(args.out, Path("runs") / name)
        print_default(run_autopq(config, out, progress=not args.no_progress), config, out)
        return 0
    out = output_folder(args.out, Path("runs") / f"autopq-advanced-{config.series_name()}-seed{config.seed}")
    summary = run_advanced(config, out, progress=not args.no_progress)
    if not summary:
        print(f"worker finished; the study is in {config.storage_url(out)}")
    else:
        print_advanced(summary, config.series_name(), out)
    return 0


def describe(parameters: dict[str, Any]) -> str:
    """A sampler's parameters in a few characters (a list of 24 σs by its range)."""
    return ", ".join(f"{k} {min(v):.3g}-{max(v):.3g}" if isinstance(v, list) else f"{k} {v:.4g}"
                     for k, v in parameters.items())


def print_default(summary: dict[str, Any], config: AutoPQConfig, out: Path) -> None:
    print(f"AutoPQ-default on {summary['series']} with {summary['forecaster']}: sampler {summary['sampler']} "
          f"({describe(summary['parameters'])}), validation CRPS {summary['validation_crps']:.4f}, "
          f"{summary['wall_seconds']:.0f} s")
    if len(summary["samplers"]) > 1:
        print("validation CRPS of each sampler: " + ", ".join(
            f"{name} {s['validation_crps']:.4f}" for name, s in summary["samplers"].items()))
    if summary.get("left_out"):
        print(summary["left_out"])
    print(f"{'test':26s} {'CRPS':>8s} {'CRPS ens.':>9s} {'pinball':>8s} {'coverage err':>12s} {'MAE':>8s} {'RMSE':>8s}")
    for method, m in summary["metrics"].items():
        print(f"{method:26s} {m['crps']:8.4f} {m['crps_ensemble']:9.4f} {m['pinball']:8.4f} "
              f"{m['coverage_error']:12.4f} {m['mae']:8.4f} {m['rmse']:8.4f}")
    print("CRPS: ours, from the quantile function; CRPS ens.: the authors' (the quantiles as ensemble members)")
    print(f"energy {summary['energy_kwh'] * 1000:.3g} Wh, cost {summary['energy_cost']:.3g} at "
          f"{config.price_per_kwh:g} per kWh ({summary['energy_source']})")
    print(f"outputs in {out}: quantiles.csv, metrics.csv, trials.csv, summary.json, fan.png, reliability.png")


def print_advanced(summary: dict[str, Any], name: str, out: Path) -> None:
    best, default = summary["best"], summary["default"]
    print(f"AutoPQ-advanced on {name}: trials {summary['trials']}; best: {best['forecaster']} "
          f"{best['hyperparameters']}, sampler parameter {best['parameter']:.4g}")
    print(f"{'':22s} {'validation CRPS':>16s} {'test CRPS':>10s}")
    print(f"{'advanced':22s} {best['validation_crps']:16.4f} {summary['metrics']['advanced']['crps']:10.4f}")
    print(f"{'default (' + default['forecaster'] + ')':22s} {default['validation_crps']:16.4f} "
          f"{default['test_crps']:10.4f}")
    print(f"energy: search and refit {summary['energy_kwh'] * 1000:.3g} Wh (cost {summary['energy_cost']:.3g}), "
          f"AutoPQ-default {default['energy_kwh'] * 1000:.3g} Wh ({summary['energy_source']})")
    print(f"outputs in {out}: advanced.json, trials.csv, trials.png, default/")
