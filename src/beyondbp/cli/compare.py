"""``beyondbp compare`` (methods and seeds side by side) and ``beyondbp tune`` (a search with Optuna)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..compare import compare
from ..errors import BeyondBPError
from ..options import float_list, int_list, name_list
from ..tune import Range, tune
from .common import add_run_options, config_from, data_name, output_folder


def add(commands) -> None:
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
    tuner.add_argument("--jobs", type=int, default=1, help="trials at a time, each in its own process (default 1)")
    tuner.add_argument("--out", type=Path, help="output folder (default runs/tune-METHOD-DATASET)")
    add_run_options(tuner)
    tuner.set_defaults(handler=cmd_tune, continues="the same command continues the search")


def cmd_compare(args: argparse.Namespace) -> int:
    base = config_from(args, "bp", 0)
    out = output_folder(args.out, Path("runs") / f"compare-{data_name(args)}")
    compare(base, args.methods, args.seeds, out, progress=not args.no_progress)
    print((out / "results.md").read_text(), end="")
    print(f"results: {out / 'results.csv'}, {out / 'results.md'}, plot: {out / 'curves.png'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
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
