"""Suite results as CSV, markdown tables with the gap-closed figure, plots, and RESULTS.md."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from ..metrics import HEADLINE
from ..plots import plot_curves, plot_sweep
from ..tables import mean_std, read_rows, write_rows
from .speed import speed_markdown
from .suite import SUITES_DIR, Suite, load_suite

CSV_COLUMNS = ("dataset", "model", "method", "seed", "epochs", "metric", "final", "best")
LARGER_IS_BETTER = dict(HEADLINE.values())
NOTES_NAME = "NOTES.md"  # hand-written analysis next to RESULTS.md, linked from it


def write_suite_csv(rows: list[dict[str, Any]], path: Path) -> None:
    write_rows(rows, path, CSV_COLUMNS)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values and not any(math.isnan(v) for v in values) else math.nan


def spread(values: list[float]) -> float:
    """The sample standard deviation; NaN where a run diverged (its metric is NaN), 0 for one run."""
    if any(math.isnan(v) for v in values):
        return math.nan
    return statistics.stdev(values) if len(values) > 1 else 0.0


def gap_closed(method: float, baseline: float, bp: float, larger_is_better: bool = True) -> float:
    """Fraction of the gap between ``baseline`` and BP that ``method`` closes:
    ``(method - baseline) / (bp - baseline)``; the same formula holds for errors (signs cancel).
    NaN where BP is not better than the baseline: there is no gap to close."""
    bp_ahead = bp > baseline if larger_is_better else bp < baseline
    return (method - baseline) / (bp - baseline) if bp_ahead else math.nan


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def plot_suite(name: str, curves: dict[tuple[str, str, str], dict[str, list[dict[int, float]]]],
               results_dir: Path) -> None:
    """One plot per (dataset, model, metric): the test metric per epoch of every method."""
    for (dataset, model, metric), by_method in curves.items():
        plot_curves(by_method, metric, results_dir / f"{name}-{dataset}-{model}.png",
                    title=f"{name}: {dataset}, {model} (mean ± std over seeds)")


def sweep_points(suite: Suite, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For a suite with a sweep: per data set (and model or method), the final metric against the
    swept number (the first group of the sweep's pattern), and the other methods as baselines."""
    pattern, over = re.compile(suite.sweep["pattern"]), suite.sweep["over"]
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        other = "method" if over == "model" else "model"
        plot = groups.setdefault(f"{row['dataset']}-{row[other]}" if over == "method" else row["dataset"],
                                 {"points": {}, "baselines": {}, "metric": row["metric"]})
        match = pattern.fullmatch(row[over])
        if match:
            # a swept method is named by what surrounds the number, e.g. 'ldfa:r' for 'ldfa:r(\d+)'
            series = row[other] if over == "model" else row[over][:match.start(1)] + row[over][match.end(1):]
            plot["points"].setdefault(series, {}).setdefault(float(match.group(1)), []).append(row["final"])
        else:
            plot["baselines"].setdefault(row[over] if over == "method" else f"{row[over]} ({row[other]})",
                                         []).append(row["final"])
    return groups


def plot_sweeps(suite: Suite, rows: list[dict[str, Any]], results_dir: Path) -> list[str]:
    """The sweep plots of a suite that has one; their file names."""
    if suite.sweep is None:
        return []
    names = []
    for key, plot in sweep_points(suite, rows).items():
        name = f"{suite.name}-{key}-sweep.png"
        plot_sweep(plot["points"], plot["baselines"], plot["metric"], suite.sweep.get("label", "x"),
                   results_dir / name, title=f"{suite.name}: {key} (mean ± std over seeds)")
        names.append(name)
    return names


def alignment_lines(alignment_rows: list[dict[str, Any]], dataset: str, model: str, heading: str) -> list[str]:
    """Per method and layer: the cosine between the method's gradient and backprop's after the last epoch."""
    mine = [r for r in alignment_rows if r["dataset"] == dataset and r["model"] == model]
    if not mine:
        return []
    layers = list(dict.fromkeys(r["layer"] for r in mine))
    lines = [f"{heading}## {dataset}, {model}: alignment with backprop after the last epoch", "",
             "Cosine between each layer's update and backprop's gradient on the same batch (mean ± std over "
             "seeds; undefined where either is zero, e.g. parameters kept out of the feedback).", "",
             "| method | " + " | ".join(f"layer {layer}" for layer in layers) + " |",
             "|---|" + "---|" * len(layers)]
    for method in dict.fromkeys(r["method"] for r in mine):
        cells = [mean_std([float(r["cosine"]) for r in mine if r["method"] == method and r["layer"] == layer],
                          nan="zero update or gradient")
                 for layer in layers]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def model_sweep_lines(suite: Suite, rows: list[dict[str, Any]], alignment_rows: list[dict[str, Any]],
                      heading: str) -> list[str]:
    """For a sweep over models: one row per model (the swept number, e.g. a bottleneck width) with every
    method's final metric and each non-BP method's per-layer cosine with backprop, side by side."""
    if suite.sweep is None or suite.sweep["over"] != "model":
        return []
    pattern = re.compile(suite.sweep["pattern"])
    cell = lambda values: mean_std(values) if values else "–"
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        aligned = [r for r in alignment_rows if r["dataset"] == dataset and r["method"] != "bp"]
        columns = list(dict.fromkeys((r["method"], r["layer"]) for r in aligned))
        lines += [f"{heading}# {dataset}: {suite.sweep.get('label', 'model')} against {mine[0]['metric']} and "
                  "alignment", "",
                  "| model | " + suite.sweep.get("label", "x") + " | " + " | ".join(methods)
                  + "".join(f" | {m} cosine, layer {layer}" for m, layer in columns) + " |",
                  "|---|---|" + "---|" * (len(methods) + len(columns))]
        for model in dict.fromkeys(r["model"] for r in mine):
            match = pattern.fullmatch(model)
            finals = [cell([r["final"] for r in mine if r["model"] == model and r["method"] == m]) for m in methods]
            cosines = [cell([float(r["cosine"]) for r in aligned
                                 if r["model"] == model and (r["method"], r["layer"]) == column]) for column in columns]
            lines.append(f"| {model} | {match.group(1) if match else '–'} | " + " | ".join(finals + cosines) + " |")
        lines.append("")
    return lines


def selection_text(suite: Suite) -> str:
    """How the suite chose each learning rate, in one bullet."""
    t = suite.tuning
    split = f"on {t.validation_fraction:.0%} of the training set held out (seed {t.seed})"
    if t.lr_range is not None:
        epochs = f"{t.epochs} epochs" if t.epochs else f"{t.epochs_fraction:.0%} of the epochs"
        return (f"- Learning rate per method, model and data set: Optuna's TPE between {t.lr_range[0]:g} and "
                f"{t.lr_range[1]:g} (log scale), {t.trials} trials of {epochs} for every method, the best final "
                f"validation metric {split}, hopeless trials pruned at the median; the test set is never used.")
    if len(t.lrs) > 1:
        return (f"- Learning rate per method, model and data set: the best final validation metric among "
                f"{', '.join(f'{lr:g}' for lr in t.lrs)}, {split}, training {t.epochs_fraction:.0%} of the "
                "epochs; the test set is never used to choose.")
    return f"- Learning rate {t.lrs[0]:g} for every method (fixed, not tuned)."


def suite_markdown(suite: Suite, rows: list[dict[str, Any]], lr_rows: list[dict[str, Any]],
                   meta: dict[str, Any], alignment_rows: list[dict[str, Any]] | None = None,
                   cost_rows: list[dict[str, Any]] | None = None, image_prefix: str = "", heading: str = "#",
                   floor_rows: list[dict[str, Any]] | None = None,
                   sample_rows: list[dict[str, Any]] | None = None) -> str:
    epochs = ", ".join(f"{d} {o['epochs']}" for d, o in suite.datasets.items())
    lines = [
        f"{heading} Suite `{suite.name}`", "",
        suite.description, "",
        f"- Command: `beyondbp bench {suite.name} --jobs {meta['jobs']}`; suite file "
        f"`benchmarks/suites/{suite.name}.toml`.",
        f"- Settings: {suite.settings_text()}; seeds {', '.join(map(str, suite.seeds))}; epochs: {epochs}. "
        f"Everything not named has the `beyondbp train` default.",
        selection_text(suite),
        f"- Machine: {meta['machine']}. Finished {meta['finished']}; the invocation that finished it took "
        f"{meta['wall_seconds'] / 60:.0f} min with {meta['jobs']} parallel job(s).",
        "",
    ]
    chosen = {(r["dataset"], r["model"], r["method"]): r["lr"] for r in lr_rows if r["chosen"]}
    communicates = any(float(r.get("comm_bytes_per_step", 0) or 0) > 0 for r in cost_rows or [])
    energy_sources = sorted({r["energy_source"] for r in cost_rows or [] if r.get("energy_source")})
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"]), {}).setdefault(row["method"], []).append(row)
    for (dataset, model), by_method in groups.items():
        metric = next(iter(by_method.values()))[0]["metric"]
        larger = LARGER_IS_BETTER[metric]
        lines += table_lines(dataset, model, by_method, chosen, cost_rows or [], communicates, energy_sources,
                             f"{heading}# {dataset}, {model}: {metric} ({'higher' if larger else 'lower'} is better)")
        means = {m: mean([r["final"] for r in runs]) for m, runs in by_method.items()}
        spreads = {m: spread([r["final"] for r in runs]) for m, runs in by_method.items()}
        lines += corpus_lines(dataset, model, by_method, cost_rows or [], floor_rows or [])
        lines += sample_lines([r for r in sample_rows or [] if (r["dataset"], r["model"]) == (dataset, model)])
        lines += [""] + gap_lines(means, suite.goal_gap_closed, larger, spreads)
        lines += ["", f"![{dataset} {model}]({image_prefix}{suite.name}-{dataset}-{model}.png)", ""]
        lines += alignment_lines(alignment_rows or [], dataset, model, heading)
    lines += model_sweep_lines(suite, rows, alignment_rows or [], heading)
    if suite.sweep is not None:
        lines += [f"![sweep {key}]({image_prefix}{suite.name}-{key}-sweep.png)" for key in sweep_points(suite, rows)]
        lines.append("")
    lines.append("'Final' is the test metric after the last epoch; 'best epoch' is the best test value over "
                 "the evaluated epochs, shown for reference only (choosing it would tune on the test set). "
                 "'s / epoch': training seconds per epoch (runs shared the machine with the other jobs, so compare "
                 "within a suite only); "
                 "'trainable': the fraction of parameters trained at the end (below 100% with low-rank training); "
                 "'step MB': the peak memory of one training step's gradient estimate beyond parameters and "
                 "optimizer state (activations, graph, temporaries, new gradients; docs/usage.md); "
                 "'bytes sent / step' (data-parallel runs): what each rank sent per step, averaged over the run."
                 + (f" 'J / epoch': training energy per epoch, and its ratio to the table's first method; measured "
                    f"by {'; '.join(energy_sources)} (runs shared the machine, so an estimate from CPU time is "
                    f"fairer between methods than a whole-machine counter)." if energy_sources else ""))
    return "\n".join(lines) + "\n"


def table_lines(dataset: str, model: str, by_method: dict[str, list[dict[str, Any]]], chosen: dict,
                cost_rows: list[dict[str, Any]], communicates: bool, energy_sources: list[str],
                title: str) -> list[str]:
    """One (data set, model) cell's table: each method's learning rate, final and best metric, cost and energy."""
    costs_of = lambda method: [r for r in cost_rows
                               if (r["dataset"], r["model"], r["method"]) == (dataset, model, method)]
    measured = any(r.get("step_memory_mb") for m in by_method for r in costs_of(m))
    lines = [title, "",
             "| method | lr | final (mean ± std) | best epoch (mean ± std) | seeds | s / epoch | trainable |"
             + (" step MB |" if measured else "") + (" bytes sent / step |" if communicates else "")
             + (" J / epoch (× first) |" if energy_sources else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if measured else "") + ("---|" if communicates else "")
             + ("---|" if energy_sources else "")]
    joules = {m: mean([float(r["joules_per_epoch"]) for r in costs_of(m)])
              for m in by_method if costs_of(m) and all(r.get("joules_per_epoch") for r in costs_of(m))}
    reference = joules.get(next(iter(by_method)))
    for method, runs in by_method.items():
        costs = costs_of(method)
        cost = lambda column, form: form.format(mean([float(r[column]) for r in costs])) if costs else "–"
        energy = (f"{joules[method]:.3g}" + (f" ({joules[method] / reference:.2f}×)" if reference else "")
                  if method in joules else "–")
        lines.append(f"| {method} | {chosen[(dataset, model, method)]:g} | "
                     f"{mean_std([r['final'] for r in runs])} | {mean_std([r['best'] for r in runs])} | "
                     f"{len(runs)} | {cost('seconds_per_epoch', '{:.3g}')} | "
                     f"{cost('trainable_fraction', '{:.0%}')} |"
                     + (f" {step_memory(costs)} |" if measured else "")
                     + (f" {cost('comm_bytes_per_step', '{:,.0f}')} |" if communicates else "")
                     + (f" {energy} |" if energy_sources else ""))
    return lines


def with_measured_memory(cost_rows: list[dict[str, Any]], memory_path: Path) -> list[dict[str, Any]]:
    """``cost_rows`` whose runs recorded no ``step_memory_mb`` take the one ``bench memory`` measured for
    their (data set, model, method), where there is such a file."""
    if not memory_path.is_file():
        return cost_rows
    measured = {(r["dataset"], r["model"], r["method"]): r["step_memory_mb"] for r in read_rows(memory_path)}
    return [r if r.get("step_memory_mb") else {**r, "step_memory_mb": measured.get(
        (r["dataset"], r["model"], r["method"]), "")} for r in cost_rows]


def step_memory(costs: list[dict[str, Any]]) -> str:
    """The mean of the runs' ``step_memory_mb`` (runs from before it was measured have none: –)."""
    values = [float(r["step_memory_mb"]) for r in costs if r.get("step_memory_mb")]
    return f"{mean(values):.3g}" if values else "–"


def corpus_lines(dataset: str, model: str, by_method: dict[str, list[dict[str, Any]]],
                 cost_rows: list[dict[str, Any]], floor_rows: list[dict[str, Any]]) -> list[str]:
    """For a corpus (task lm): the n-gram floors, and each method's bits per token, tokens per second and
    joules per thousand tokens."""
    floors = next((r for r in floor_rows if r["dataset"] == dataset), None)
    if floors is None:
        return []
    tokens = float(floors["train_tokens"])
    lines = ["", f"Floors on the test part, counted on the training part ({tokens:,.0f} tokens; add-one smoothing): "
                 f"unigram {float(floors['unigram']):.4f}, bigram {float(floors['bigram']):.4f} nats per token.", "",
             "| method | final bits / token | below bigram | tokens / s | J / 1k tokens |", "|---|---|---|---|---|"]
    for method, runs in by_method.items():
        costs = [r for r in cost_rows if (r["dataset"], r["model"], r["method"]) == (dataset, model, method)]
        seconds = mean([float(r["seconds_per_epoch"]) for r in costs]) if costs else math.nan
        joules = [float(r["joules_per_epoch"]) for r in costs if r.get("joules_per_epoch")]
        final = mean([r["final"] for r in runs])
        lines.append(f"| {method} | {final / math.log(2):.3f} | {'yes' if final < float(floors['bigram']) else 'no'} "
                     f"| {tokens / seconds:,.0f} | " + (f"{mean(joules) / tokens * 1000:.3g}" if joules else "–")
                     + " |")
    return lines


#: How a suite's samples of text are drawn (``beyondbp generate``'s settings).
SAMPLE = {"prompt": "\n", "tokens": 200, "temperature": 0.8, "seed": 0}


def sample_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each method's sampled text (the suite's first seed; :data:`SAMPLE`), in a code block."""
    if not rows:
        return []
    lines = ["", f"Samples: {SAMPLE['tokens']} tokens after a new line from each method's run of the first seed "
                 f"(`beyondbp generate --run DIR --temperature {SAMPLE['temperature']} --seed {SAMPLE['seed']}`).",
             ""]
    for row in rows:
        lines += [f"**{row['method']}**", "", "```text", str(row["text"]).strip("\n"), "```", ""]
    return lines


def gap_lines(means: dict[str, float], goal: float | None, larger_is_better: bool = True,
              spreads: dict[str, float] | None = None) -> list[str]:
    """The gap-closed table for every F³ variant against DRTP and against DFA, and the goal's verdict;
    no verdict where the gap between DRTP and BP is no larger than their seeds' spreads (std) together."""
    f3 = [m for m in means if m.startswith("f3")]
    if "bp" not in means or not f3 or not {"drtp", "dfa"} & set(means):
        return []
    closed = lambda m, baseline: gap_closed(means[m], means.get(baseline, math.nan), means["bp"], larger_is_better)
    lines = ["| F³ variant | gap to BP closed over DRTP | over DFA |", "|---|---|---|"]
    lines += [f"| {m} | {percent(closed(m, 'drtp'))} | {percent(closed(m, 'dfa'))} |" for m in f3]
    if goal is None or "drtp" not in means:
        return lines
    if math.isnan(closed(f3[0], "drtp")):
        return lines + ["", f"Goal: F³ closes at least {goal:.0%} of the gap between DRTP and BP. Here BP is not "
                            "better than DRTP, so there is no gap to close (n/a)."]
    gap = abs(means["bp"] - means["drtp"])
    if spreads is not None and gap <= spreads["bp"] + spreads["drtp"]:
        return lines + ["", f"Goal: F³ closes at least {goal:.0%} of the gap between DRTP and BP. Here the gap "
                            f"({gap:.4g}) is within the seeds' spread (std of BP {spreads['bp']:.2g} + DRTP "
                            f"{spreads['drtp']:.2g}): too small to measure a share of it; no verdict."]
    best = max(f3, key=lambda m: -math.inf if math.isnan(closed(m, "drtp")) else closed(m, "drtp"))
    value = closed(best, "drtp")
    verdict = "met" if value >= goal else "not met"
    return lines + ["", f"Goal: F³ closes at least {goal:.0%} of the gap between DRTP and BP. Best variant "
                        f"{best}: {percent(value)}, goal **{verdict}**."]


SPEED_NOTE = (
    "Step time: median wall time of a whole training step (zero_grad, the method's step, Adam's step), methods "
    "interleaved step by step. Step memory: peak memory allocated during the method's step beyond parameters, "
    "gradients (allocated beforehand and accumulated into) and optimizer state, from the profiler's record of every "
    "allocation on CPU (torch.cuda.max_memory_allocated on CUDA). F³ and DRTP run block by block (forward "
    "execution); DFA runs one short backward per block after the forward pass."
)


def write_results_md(results_dir: Path, out_path: Path, suites_dir: Path = SUITES_DIR) -> Path:
    """``benchmarks/RESULTS.md`` from every finished suite's CSV files (nothing typed by hand)."""
    sections = []
    for meta_path in sorted(results_dir.glob("*-meta.json")):
        meta = json.loads(meta_path.read_text())
        suite = load_suite(meta["suite"], suites_dir=suites_dir)
        rows = read_rows(results_dir / f"{suite.name}.csv")
        lr_rows = read_rows(results_dir / f"{suite.name}-lr.csv")
        alignment_path = results_dir / f"{suite.name}-alignment.csv"
        alignment_rows = read_rows(alignment_path) if alignment_path.is_file() else None
        cost_path = results_dir / f"{suite.name}-cost.csv"
        cost_rows = (with_measured_memory(read_rows(cost_path), results_dir / f"{suite.name}-memory.csv")
                     if cost_path.is_file() else None)
        floor_path = results_dir / f"{suite.name}-floors.csv"
        floor_rows = read_rows(floor_path) if floor_path.is_file() else None
        samples_path = results_dir / f"{suite.name}-samples.csv"
        sample_rows = read_rows(samples_path) if samples_path.is_file() else None
        prefix = f"{results_dir.relative_to(out_path.parent)}/" if results_dir.is_relative_to(out_path.parent) else ""
        sections.append(suite_markdown(suite, rows, lr_rows, meta, alignment_rows, cost_rows, image_prefix=prefix,
                                       heading="##", floor_rows=floor_rows, sample_rows=sample_rows))
    if (results_dir / "autopq" / "autopq.csv").is_file():
        from ..autopq.bench import autopq_section

        sections.append(autopq_section(results_dir / "autopq", out_path.parent))
    if (results_dir / "autopq-advanced" / "autopq-advanced.csv").is_file():  # finished, or in progress
        from ..autopq.advanced_bench import advanced_section

        sections.append(advanced_section(results_dir / "autopq-advanced", out_path.parent))
    if (results_dir / "pipeline" / "pipeline.csv").is_file():
        from .pipeline import pipeline_section

        sections.append(pipeline_section(results_dir / "pipeline", out_path.parent))
    speed = sorted(results_dir.glob("speed-*/speed.csv"))
    if speed:

        text = ["## Step time and memory", "", SPEED_NOTE, ""]
        text += [speed_markdown(read_rows(p), json.loads((p.parent / "meta.json").read_text())) for p in speed]
        sections.append("\n".join(text))
    header = ("# Benchmark results\n\nGenerated by `beyondbp results` from the files in `benchmarks/results/` "
              "(each written by the `beyondbp bench` command named in its section). Do not edit by hand.\n\n")
    if (out_path.parent / NOTES_NAME).is_file():
        header += f"What we found in these numbers, and why goals were missed: [{NOTES_NAME}]({NOTES_NAME}).\n\n"
    out_path.write_text(header + "\n".join(sections) if sections else header + "No suite has finished yet.\n")
    return out_path
