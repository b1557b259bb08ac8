"""Several methods × seeds on the same data, model and budget: ``beyondbp compare``.

Writes ``OUT/runs/<method>-seed<S>/`` (one run folder each; finished runs are reused,
interrupted ones resume), ``OUT/results.csv`` (one row per run), ``OUT/results.md``
(mean ± std per method) and ``OUT/curves.png`` (test metric per epoch). A method that refuses the
model or the settings (a layer it has no rule for, a model that is not a sequence of blocks) is
listed in the table with its reason, and the others run; only when every method refuses does the
comparison stop.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import RunConfig
from .errors import BeyondBPError, UnsupportedModelError
from .experiment import run
from .metrics import HEADLINE
from .plots import metric_curve, plot_curves
from .tables import mean_std, write_rows
from .train import METRICS_NAME

CSV_COLUMNS = ("method", "seed", "dataset", "model", "epochs", "train_seconds", "train_joules", "metric", "final",
               "best")


def method_configs(base: RunConfig, methods: Sequence[str], seeds: Sequence[int],
                   refused: dict[str, str] | None = None) -> list[RunConfig]:
    """One config per method and seed; ``base.signal`` applies to a plain ``f3`` only. With ``refused``, a
    method that refuses the model is recorded there (method: reason) instead of stopping everything; wrong
    settings stop it."""
    configs = []
    for method in methods:
        signal = base.signal if method == "f3" else None
        try:
            dataclasses.replace(base, method=method, signal=signal).validate()
        except UnsupportedModelError as error:
            if refused is None:
                raise
            refused[method] = str(error)
            continue
        configs += [dataclasses.replace(base, method=method, signal=signal, seed=seed) for seed in seeds]
    return configs


def compare(base: RunConfig, methods: Sequence[str], seeds: Sequence[int], out_dir: Path | str,
            progress: bool = True) -> list[dict[str, Any]]:
    """Run every method with every seed and write the CSV, the markdown table and the plot; the methods that
    refuse are listed in the table (``OUT/refused.json``: method → reason)."""
    out_dir = Path(out_dir)
    refused: dict[str, str] = {}
    configs = method_configs(base, methods, seeds, refused)
    data = base.load_data() if configs else None
    summaries, curves = [], {}
    for config in tqdm(configs, desc="runs", disable=None if progress else True, dynamic_ncols=True):
        if config.method in refused:
            continue
        run_dir = out_dir / "runs" / f"{config.method.replace(':', '-')}-seed{config.seed}"
        try:
            summary = run(config, run_dir, resume=True, progress=progress, data=data)
        except UnsupportedModelError as error:
            refused[config.method] = str(error)
            continue
        summaries.append(summary)
        history = [json.loads(line) for line in (run_dir / METRICS_NAME).read_text().splitlines()]
        curves.setdefault(summary["method"], []).append(metric_curve(history, summary["metric"]))
    if not summaries:
        raise BeyondBPError("every method refused: " + "; ".join(refused.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "refused.json").write_text(json.dumps(refused, indent=2) + "\n")
    write_csv(summaries, out_dir / "results.csv")
    (out_dir / "results.md").write_text(markdown_table(summaries, base, seeds, refused))
    plot_curves(curves, summaries[0]["metric"], out_dir / "curves.png", title=settings_line(base, seeds))
    return summaries


def write_csv(summaries: Sequence[dict[str, Any]], path: Path) -> None:
    write_rows([{"method": s["method"], "seed": s["seed"], "dataset": s["dataset"], "model": s["model"],
                 "epochs": s["epochs"], "train_seconds": f"{s['train_seconds']:.2f}",
                 "train_joules": f"{s['train_joules']:.1f}" if "train_joules" in s else "", "metric": s["metric"],
                 "final": f"{s[s['metric']]:.6f}", "best": f"{s['best_' + s['metric']]:.6f}"} for s in summaries],
               path, CSV_COLUMNS)


def settings_line(base: RunConfig, seeds: Sequence[int]) -> str:
    return (f"{base.data or base.dataset}, {base.model_options().describe()}, loss {base.loss or 'default'}, "
            f"{base.optimizer} lr {base.lr:g}, batch {base.batch_size}, {base.epochs} epochs, "
            f"feedback {base.feedback_init}, seeds {','.join(map(str, seeds))}")


def markdown_table(summaries: Sequence[dict[str, Any]], base: RunConfig, seeds: Sequence[int],
                   refused: dict[str, str] | None = None) -> str:
    metric = summaries[0]["metric"]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        by_method.setdefault(s["method"], []).append(s)
    direction = "higher" if HEADLINE[summaries[0]["task"]][1] else "lower"
    lines = [
        f"Settings: {settings_line(base, seeds)}.",
        "",
        f"| method | final {metric} | best {metric} | train seconds | train joules |",
        "|---|---|---|---|---|",
    ]
    for method, runs in by_method.items():
        joules = [r["train_joules"] for r in runs if "train_joules" in r]
        lines.append(f"| {method} | {mean_std([r[metric] for r in runs])} | "
                     f"{mean_std([r['best_' + metric] for r in runs])} | "
                     f"{statistics.fmean(r['train_seconds'] for r in runs):.1f} | "
                     f"{f'{statistics.fmean(joules):.0f}' if joules else 'not measured'} |")
    for method, reason in (refused or {}).items():
        lines.append(f"| {method} | refused: {reason.replace('|', '/')} | | | |")
    sources = sorted({s["energy_source"] for s in summaries if "energy_source" in s})
    lines += ["", f"Mean ± standard deviation over {len(seeds)} seed(s); {direction} is better. "
              "Best is the best epoch on the test set, shown for reference only. Energy: "
              f"{'; '.join(sources) or 'not measured (runs from before energy was recorded)'}."]
    return "\n".join(lines) + "\n"
