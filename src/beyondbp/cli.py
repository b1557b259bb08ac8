"""The ``beyondbp`` command: ``train``, ``compare``, ``bench``, ``autopq``, ``list`` and the diagnostics.

User errors (unknown names, missing data, bad numbers) print one line and exit 2;
a diverging run exits 1 with its message; neither shows a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .autopq.advanced import AdvancedConfig
from .autopq.forecasters import FORECASTERS
from .autopq.quantiles import BASELINES
from .autopq.run import AutoPQConfig
from .autopq.series import SOURCES
from .bench.pipeline import PIPELINE_DEFAULTS, SCHEDULES
from .checkpoint import CHECKPOINT_NAME
from .compare import compare
from .data import DATASETS
from .distributed import launched_rank, launched_world
from .errors import BeyondBPError
from .experiment import OPTIMIZERS, RunConfig, run
from .functions import FUNCTIONS
from .methods import FEEDBACK_INITS, METHODS, SIGNALS, method_options
from .methods.aggregation import AGGREGATIONS
from .methods.tangents import TANGENT_SAMPLERS
from .models import ACTIVATIONS, MODELS
from .objectives import OBJECTIVES
from .options import add_options, float_list, from_args, int_list, name_list


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The flags of every :class:`RunConfig` setting (declared there), and ``--no-progress``."""
    add_options(parser, RunConfig)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from(args: argparse.Namespace, method: str, seed: int) -> RunConfig:
    return from_args(RunConfig, args, method=method, seed=seed)


def data_name(args: argparse.Namespace) -> str:
    """The data's name in default output folders: the data set, or the stem of ``--data``."""
    return Path(args.data).stem if args.data else args.dataset


def output_folder(given: Path | None, default: Path) -> Path:
    """``--out`` (or the default), refused when it names an existing file: nothing of the user's is overwritten."""
    out = given or default
    if out.exists() and not out.is_dir():
        raise BeyondBPError(f"--out {out} is an existing file, not a folder; choose another path")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from(args, args.method, args.seed)
    config.validate()
    unused = config.inapplicable()
    if unused:
        method = args.method.partition(":")[0]
        flag = {f.metadata["method_arg"]: "--" + f.name.replace("_", "-")
                for f in dataclasses.fields(RunConfig) if f.metadata.get("method_arg")}
        taken = [flag[name] for name in method_options(method) if name in flag]
        given = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise BeyondBPError(f"{given} {'does' if len(unused) == 1 else 'do'} not apply to method {method}; "
                            f"its options: {', '.join(taken) or 'none'}")
    if launched_world() is not None and config.stages == 1:  # launched by torchrun: one rank of the run
        config.nproc = launched_world()
    out = output_folder(args.out, Path("runs") / f"{args.method.replace(':', '-')}-{data_name(args)}-seed{args.seed}")
    if args.resume and not (out / CHECKPOINT_NAME).is_file() and launched_rank() == 0:
        print(f"beyondbp: --resume: no checkpoint in {out}; starting from epoch 1", file=sys.stderr)
    summary = run(config, out, resume=args.resume, progress=not args.no_progress, align_every=args.align_every)
    if not summary or (config.stages == 1 and launched_rank() != 0):
        return 0  # another process reports: rank 0, or the last stage
    metric = summary["metric"]
    print(f"{summary['method']} on {summary['dataset']}: {metric} {summary[metric]:.4f} "
          f"(best {summary['best_' + metric]:.4f}) after {summary['epochs']} epochs, "
          f"{summary['train_seconds']:.1f} s and {summary['train_joules']:.0f} J training "
          f"({summary['energy_source']}); outputs in {out}")
    if "split" in summary:
        print(f"{config.stages} stages, {summary['samples_per_second']:.0f} samples/s in the last epoch: "
              f"{summary['split']}")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .diagnostics import alignment
    from .experiment import build_run, config_from_checkpoint, resolve_device

    path = args.run / CHECKPOINT_NAME
    if not path.is_file():
        raise BeyondBPError(f"no checkpoint at {path}; give the output folder of 'beyondbp train'")
    device = resolve_device(args.device)
    state = load_checkpoint(path, device)
    config = config_from_checkpoint(state, data_dir=args.data_dir, device=args.device)
    data = config.load_data()
    model, method, _, objective = build_run(config, data, device)
    method.attach(model, num_outputs=data.train.num_outputs, num_samples=len(data.train), task=data.task)
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    n = min(args.batch_size, len(data.train))
    report = alignment(model, method, data.train.x[:n].to(device), data.train.t[:n].to(device),
                       torch.arange(n, device=device), objective)
    (args.run / "alignment.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{method.label} after epoch {len(state['history'])}, on the first {n} training samples of {data.name}:")
    print("| layer | cosine | angle (deg) | norm ratio |\n|---|---|---|---|")
    for layer, v in report["layers"].items():
        print(f"| {layer} | {v['cosine']:.4f} | {v['angle']:.1f} | {v['norm_ratio']:.4g} |")
    for s in report.get("signals", []):
        print(f"signal at point {s['point']}: cosine with the true gradient {s['cosine_mean']:.4f} "
              f"± {s['cosine_std']:.4f} over samples")
    print(f"written: {args.run / 'alignment.json'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    base = config_from(args, "bp", 0)
    out = output_folder(args.out, Path("runs") / f"compare-{data_name(args)}")
    compare(base, args.methods, args.seeds, out, progress=not args.no_progress)
    print((out / "results.md").read_text(), end="")
    print(f"results: {out / 'results.csv'}, {out / 'results.md'}, plot: {out / 'curves.png'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import load_suite, run_suite, write_results_md
    from .bench.runner import RESULTS_DIR

    if args.suite == "speed":
        refuse_flags(args, PIPELINE_DEFAULTS, "bench pipeline")
        return cmd_speed(args)
    if args.suite == "pipeline":
        shared = ("depth", "width", "batch_size", "out")
        refuse_flags(args, {k: v for k, v in SPEED_DEFAULTS.items() if k not in shared}, "bench speed")
        return cmd_pipeline(args)
    if args.suite == "autopq":
        from .autopq.bench import run_autopq_suite

        report = run_autopq_suite(jobs=args.jobs, report_only=args.report_only)
        print(report.read_text(), end="")
        print(f"results: {report.parent}; updated {write_results_md(RESULTS_DIR, RESULTS_DIR.parent / 'RESULTS.md')}")
        return 0
    if args.suite == "autopq-advanced":
        from .autopq.advanced_bench import run_advanced_suite

        report = run_advanced_suite()
        print(report.read_text(), end="")
        print(f"results: {report.parent}; updated {write_results_md(RESULTS_DIR, RESULTS_DIR.parent / 'RESULTS.md')}")
        return 0
    if args.report_only:
        raise BeyondBPError("--report-only applies to 'beyondbp bench autopq' only")
    refuse_flags(args, SPEED_DEFAULTS, "bench speed")
    refuse_flags(args, PIPELINE_DEFAULTS, "bench pipeline")
    suite = load_suite(args.suite, seeds=args.seeds)
    csv_path = run_suite(suite, n_jobs=args.jobs)
    print((csv_path.with_suffix(".md")).read_text(), end="")
    results = write_results_md(RESULTS_DIR, RESULTS_DIR.parent / "RESULTS.md")
    print(f"results: {csv_path}, {csv_path.with_suffix('.md')}; updated {results}")
    return 0


SPEED_DEFAULTS = {"methods": ["bp", "f3", "drtp", "dfa"], "depth": 8, "width": 1024, "batch_size": 1024,
                  "steps": 30, "model": "mlp", "device": "auto", "out": None}


def refuse_flags(args: argparse.Namespace, defaults: dict, command: str) -> None:
    """Flags of another bench command, changed from their defaults, are an error."""
    given = [f"--{k.replace('_', '-')}" for k in defaults if getattr(args, k) != defaults[k]]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise BeyondBPError(f"{', '.join(given)} {verb} to 'beyondbp {command}' only")


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .bench.pipeline import run_pipeline_bench
    from .bench.runner import RESULTS_DIR

    out = args.out or RESULTS_DIR / "pipeline"
    run_pipeline_bench(out, args.depth, args.width, args.batch_size, args.stages, args.microbatches, args.samples,
                       args.schedule, rounds=args.rounds)
    print((out / "pipeline.md").read_text(), end="")
    print(f"results: {out / 'pipeline.csv'}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from .bench.runner import RESULTS_DIR
    from .bench.speed import run_speed, speed_markdown

    out = args.out or RESULTS_DIR / f"speed-{args.model}-depth{args.depth}"
    rows = run_speed(args.methods, args.depth, args.width, args.batch_size, out, steps=args.steps,
                     model=args.model, device=args.device)
    print(speed_markdown(rows, json.loads((out / "meta.json").read_text())), end="")
    print(f"results: {out / 'speed.csv'}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from .bench import write_results_md
    from .bench.runner import RESULTS_DIR

    print(f"wrote {write_results_md(RESULTS_DIR, RESULTS_DIR.parent / 'RESULTS.md')}")
    return 0


def cmd_approx(args: argparse.Namespace) -> int:
    from .approx import approximation_quality, write_approx

    for how in args.aggregations:
        if how not in AGGREGATIONS:
            raise BeyondBPError(f"unknown aggregation '{how}'; known aggregations: {', '.join(AGGREGATIONS)}")
    TANGENT_SAMPLERS.get(args.sampler)
    rows = approximation_quality(args.dims, args.tangents, args.aggregations, args.sampler, args.samples,
                                 args.seed, args.angle)
    if not rows:
        raise BeyondBPError("no (n, k, aggregation) combination applies; projection needs k <= n")
    write_approx(rows, args.out)
    print("| n | k | aggregation | cosine | norm ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['k']} | {r['aggregation']} | {r['cosine_mean']:.4f} ± {r['cosine_std']:.4f} | "
              f"{r['norm_ratio_mean']:.4g} ± {r['norm_ratio_std']:.2g} |")
    print(f"results: {args.out / 'approx.csv'}, plot: {args.out / 'approx.png'}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from .functions import optimize

    result = optimize(args.function, args.dim, args.tangents, args.aggregation, args.steps, args.lr,
                      args.sampler, args.angle, args.seed)
    print(f"{args.function}, n={args.dim}, {args.steps} steps, lr {args.lr:g}: forward gradient "
          f"(k={args.tangents}, {args.aggregation}) reaches {result.final:.6g}; "
          f"exact gradient {result.exact_final:.6g}; "
          f"known minimum {result.minimum:.6g} (gap {result.final - result.minimum:.4g})")
    return 0


def cmd_autopq(args: argparse.Namespace) -> int:
    from .autopq.run import run_autopq

    config = from_args(AutoPQConfig, args)
    config.validate()
    out = output_folder(args.out, Path("runs") / f"autopq-{config.series_name()}-{config.forecaster}-seed{config.seed}")
    summary = run_autopq(config, out, progress=not args.no_progress)
    print(f"AutoPQ-default on {summary['series']} with {summary['forecaster']}: sigma {summary['sigma']:.4g} "
          f"after {summary['trials']} trials (validation CRPS {summary['validation_crps']:.4f}), "
          f"{summary['wall_seconds']:.0f} s")
    print(f"{'test':14s} {'CRPS':>8s} {'pinball':>8s} {'coverage err':>12s} {'MAE':>8s} {'RMSE':>8s}")
    for method, m in summary["metrics"].items():
        print(f"{method:14s} {m['crps']:8.4f} {m['pinball']:8.4f} {m['coverage_error']:12.4f} {m['mae']:8.4f} "
              f"{m['rmse']:8.4f}")
    print(f"energy {summary['energy_kwh'] * 1000:.3g} Wh, cost {summary['energy_cost']:.3g} at "
          f"{config.price_per_kwh:g} per kWh ({summary['energy_source']})")
    print(f"outputs in {out}: quantiles.csv, metrics.csv, trials.csv, summary.json, fan.png, reliability.png")
    return 0


def cmd_autopq_advanced(args: argparse.Namespace) -> int:
    from .autopq.advanced import run_advanced

    config = from_args(AdvancedConfig, args)
    config.validate()
    name = config.series_name()
    out = output_folder(args.out, Path("runs") / f"autopq-advanced-{name}-seed{config.seed}")
    summary = run_advanced(config, out, progress=not args.no_progress)
    if not summary:
        print(f"worker finished; the study is in {config.storage_url(out)}")
        return 0
    best, default = summary["best"], summary["default"]
    print(f"AutoPQ-advanced on {name}: trials {summary['trials']}; best: {best['forecaster']} "
          f"{best['hyperparameters']}, sigma {best['sigma']:.4g}")
    print(f"{'':22s} {'validation CRPS':>16s} {'test CRPS':>10s}")
    print(f"{'advanced':22s} {best['validation_crps']:16.4f} {summary['metrics']['advanced']['crps']:10.4f}")
    print(f"{'default (' + default['forecaster'] + ')':22s} {default['validation_crps']:16.4f} "
          f"{default['test_crps']:10.4f}")
    print(f"energy: search and refit {summary['energy_kwh'] * 1000:.3g} Wh (cost {summary['energy_cost']:.3g}), "
          f"AutoPQ-default {default['energy_kwh'] * 1000:.3g} Wh ({summary['energy_source']})")
    print(f"outputs in {out}: advanced.json, trials.csv, trials.png, default/")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import Range, tune

    config = config_from(args, args.method, args.seed)
    if len(args.lr_bounds) != 2:
        raise BeyondBPError(f"--lr-bounds takes two numbers, LOW,HIGH; got {','.join(map(str, args.lr_bounds))}")
    out = output_folder(args.out, Path("runs") / f"tune-{args.method.replace(':', '-')}-{config.dataset}")
    result = tune(config, args.trials, tuple(args.lr_bounds), tuple(Range.parse(t) for t in args.tune_param),
                  args.validation_fraction, args.seed, args.jobs, out, progress=not args.no_progress)
    best = result["best"]
    print(f"{best['method']}: best {best['metric']} {best['value']:.4f} with "
          f"{', '.join(f'{k} {v:.4g}' for k, v in best['settings'].items())} ({best['trials']} trials, "
          f"{best['pruned']} pruned, {best['failed']} failed)")
    print(f"outputs in {out}: trials.csv, best.json, tune.png, trials/")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    sections = [("methods", METHODS), ("signals (f3 --signal)", SIGNALS), ("feedback inits", FEEDBACK_INITS),
                ("tangent samplers (fg --sampler)", TANGENT_SAMPLERS), ("test functions (optimize)", FUNCTIONS),
                ("datasets", DATASETS), ("models", MODELS), ("activations", ACTIVATIONS),
                ("losses", OBJECTIVES), ("optimizers", OPTIMIZERS),
                ("AutoPQ point forecasters (autopq --forecaster)", FORECASTERS),
                ("AutoPQ baselines (autopq --baselines)", BASELINES)]
    for title, registry in sections:
        print(f"{title}:")
        for name in registry.names():
            print(f"  {name:24s} {registry.help(name)}")
    print("AutoPQ data sets (autopq --dataset):")
    for name, source in SOURCES.items():
        low, high = ("open" if bound is None else f"{bound:g}" for bound in source.bounds)
        print(f"  {name:24s} {source.description}; target {source.target}, physical range [{low}, {high}]")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="beyondbp", description="Train networks without exact backpropagation; compare with it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one model with one method")
    train.add_argument("--method", default="bp",
                       help="bp, shallow, fa, dfa, drtp, f3 (or f3:SIGNAL), fg (or fg:VARIANT)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, help="output folder (default runs/METHOD-DATASET-seedS)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--align-every", type=int, default=0, metavar="N",
                       help="every N epochs, log alignment with backprop into metrics.jsonl and plot alignment.png")
    add_run_options(train)
    train.set_defaults(handler=cmd_train)

    comp = commands.add_parser("compare", help="several methods and seeds side by side")
    comp.add_argument("--methods", type=name_list, default=["bp", "fa", "dfa", "drtp", "f3"],
                      help="comma-separated, e.g. bp,dfa,f3:delayed_loss (default bp,fa,dfa,drtp,f3)")
    comp.add_argument("--seeds", type=int_list, default=(1, 2, 3), help="default 1,2,3")
    comp.add_argument("--out", type=Path, help="output folder (default runs/compare-DATASET)")
    add_run_options(comp)
    comp.set_defaults(handler=cmd_compare)

    tuner = commands.add_parser("tune", help="search one method's learning rate (and other settings) with Optuna "
                                             "on a validation split")
    tuner.add_argument("--method", default="bp", help="the method to tune (as for train)")
    tuner.add_argument("--seed", type=int, default=0, help="seed of the runs, the validation split and the sampler")
    tuner.add_argument("--trials", type=int, default=20, help="trials (default 20)")
    tuner.add_argument("--lr-bounds", type=float_list, default=(1e-4, 1e-2), metavar="LOW,HIGH",
                       help="learning rate searched on a log scale between these (default 1e-4,1e-2)")
    tuner.add_argument("--tune-param", action="append", default=[], metavar="NAME=LOW:HIGH[:log]",
                       help="another numeric setting to search, e.g. momentum=0.5:0.99 (repeatable)")
    tuner.add_argument("--validation-fraction", type=float, default=0.1,
                       help="share of the training set held out to score trials (default 0.1)")
    tuner.add_argument("--jobs", type=int, default=1, help="trials in parallel threads (default 1: reproducible)")
    tuner.add_argument("--out", type=Path, help="output folder (default runs/tune-METHOD-DATASET)")
    add_run_options(tuner)
    tuner.set_defaults(handler=cmd_tune)

    bench = commands.add_parser("bench", help="run a benchmark suite from benchmarks/suites/SUITE.toml")
    bench.add_argument("suite", help="suite name (e.g. f3-classification) or path to a .toml file")
    bench.add_argument("--seeds", type=int_list, help="override the suite's seeds, e.g. 1,2,3")
    bench.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    bench.add_argument("--report-only", action="store_true",
                       help="autopq: report the finished runs (naming the missing ones) without running any")
    g = bench.add_argument_group("bench speed (step time and memory against the first method)")
    g.add_argument("--methods", type=name_list, default=SPEED_DEFAULTS["methods"], help="default bp,f3,drtp,dfa")
    g.add_argument("--depth", type=int, default=SPEED_DEFAULTS["depth"], help="hidden blocks (default 8)")
    g.add_argument("--width", type=int, default=SPEED_DEFAULTS["width"], help="input and hidden width (default 1024)")
    g.add_argument("--batch-size", type=int, default=SPEED_DEFAULTS["batch_size"], help="default 1024")
    g.add_argument("--steps", type=int, default=SPEED_DEFAULTS["steps"], help="timed steps per method (default 30)")
    g.add_argument("--model", default=SPEED_DEFAULTS["model"], help="default mlp")
    g.add_argument("--device", default=SPEED_DEFAULTS["device"], help="auto, cpu, cuda")
    g.add_argument("--out", type=Path, help="default benchmarks/results/speed-MODEL-depthD (pipeline: "
                                            "benchmarks/results/pipeline)")
    g = bench.add_argument_group("bench pipeline (layer-parallel F3 and DRTP against pipelined backprop; also "
                                 "--depth, --width, --batch-size, --out)")
    g.add_argument("--stages", type=int, default=PIPELINE_DEFAULTS["stages"], help="processes (default 2)")
    g.add_argument("--microbatches", type=int, default=PIPELINE_DEFAULTS["microbatches"],
                   help="per batch, for pipelined backprop (default 4)")
    g.add_argument("--samples", type=int, default=PIPELINE_DEFAULTS["samples"],
                   help="generated training samples (default 30720)")
    g.add_argument("--schedule", choices=SCHEDULES, default=PIPELINE_DEFAULTS["schedule"],
                   help="pipelined backprop's schedule (default gpipe)")
    g.add_argument("--rounds", type=int, default=PIPELINE_DEFAULTS["rounds"],
                   help="times every configuration runs, in turn; the median round is reported (default 3)")
    bench.set_defaults(handler=cmd_bench)

    results = commands.add_parser("results", help="regenerate benchmarks/RESULTS.md from benchmarks/results/")
    results.set_defaults(handler=cmd_results)

    align = commands.add_parser("align", help="alignment of a trained run's method with backprop")
    align.add_argument("--run", type=Path, required=True, help="output folder of 'beyondbp train'")
    align.add_argument("--batch-size", type=int, default=256, help="first N training samples (default 256)")
    align.add_argument("--data-dir", help="where data files are (also $BEYONDBP_DATA)")
    align.add_argument("--device", default="auto")
    align.set_defaults(handler=cmd_align)

    approx = commands.add_parser("approx", help="forward-gradient estimates against the exact gradient")
    approx.add_argument("--dims", type=int_list, default=(64, 1024), help="dimensions n (default 64,1024)")
    approx.add_argument("--tangents", type=int_list, default=(1, 4, 16, 64), help="k values (default 1,4,16,64)")
    approx.add_argument("--aggregations", type=name_list, default=["mean", "sum", "projection"],
                        help="default mean,sum,projection")
    approx.add_argument("--sampler", default="normal", help="normal, rademacher, basis or angle")
    approx.add_argument("--angle", type=float, help="pairwise tangent angle in degrees (sampler angle)")
    approx.add_argument("--samples", type=int, default=100, help="draws per setting (default 100)")
    approx.add_argument("--seed", type=int, default=0)
    approx.add_argument("--out", type=Path, default=Path("runs") / "approx", help="default runs/approx")
    approx.set_defaults(handler=cmd_approx)

    opt = commands.add_parser("optimize", help="gradient descent on a closed-form test function with forward gradients")
    opt.add_argument("--function", default="sphere", help="sphere, rosenbrock or styblinski-tang (default sphere)")
    opt.add_argument("--dim", type=int, default=64, help="dimension n (default 64)")
    opt.add_argument("--tangents", type=int, default=4, help="k (default 4)")
    opt.add_argument("--aggregation", default="projection", help="single, mean, sum or projection (default projection)")
    opt.add_argument("--sampler", default="normal", help="normal, rademacher, basis or angle")
    opt.add_argument("--angle", type=float, help="pairwise tangent angle in degrees (sampler angle)")
    opt.add_argument("--steps", type=int, default=1000, help="default 1000")
    opt.add_argument("--lr", type=float, default=0.01, help="default 0.01")
    opt.add_argument("--seed", type=int, default=0)
    opt.set_defaults(handler=cmd_optimize)

    autopq = commands.add_parser("autopq", help="quantile forecasts from a point forecast (AutoPQ-default)")
    autopq.add_argument("--out", type=Path, help="output folder (default runs/autopq-DATA-FORECASTER-seedS)")
    autopq.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_options(autopq, AutoPQConfig)
    autopq.set_defaults(handler=cmd_autopq)
    advanced = commands.add_parser("autopq-advanced", help="AutoPQ-advanced: forecaster, hyperparameters and sigma "
                                                           "searched together by many workers (Optuna)")
    advanced.add_argument("--out", type=Path, help="output folder (default runs/autopq-advanced-DATA-seedS)")
    advanced.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_options(advanced, AdvancedConfig)
    advanced.set_defaults(handler=cmd_autopq_advanced)

    lst = commands.add_parser("list", help="methods, signals, feedback inits, data sets, models")
    lst.set_defaults(handler=cmd_list)
    return parser


def as_flags(message: str) -> str:
    """A library message's settings (``nproc=2``, ``lowrank='ab'``) as the flags that set them (``--nproc 2``)."""
    names = sorted((f.name for f in dataclasses.fields(RunConfig)), key=len, reverse=True)
    pattern = re.compile(rf"\b({'|'.join(names)})=('?)([^\s,;:)']*)\2")
    return pattern.sub(lambda m: f"--{m.group(1).replace('_', '-')} {m.group(3)}".rstrip(), message)


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"beyondbp: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = one_line_warning
    try:
        return args.handler(args)
    except BeyondBPError as error:
        print(f"beyondbp: error: {as_flags(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("beyondbp: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
