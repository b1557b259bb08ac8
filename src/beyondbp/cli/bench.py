"""``beyondbp bench SUITE``, ``bench speed``, ``bench pipeline``, ``bench loop``, ``bench memory`` and
``results``: one parser each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..autopq.advanced_bench import run_advanced_suite
from ..autopq.bench import run_autopq_suite
from ..bench import load_suite, run_suite, write_results_md
from ..bench.loop import LOOP_MODELS, loop_markdown, run_loop_bench
from ..bench.memory import memory_markdown, run_memory_bench
from ..bench.pipeline import PIPELINE_DEFAULTS, SCHEDULES, run_pipeline_bench
from ..bench.runner import RESULTS_DIR
from ..bench.speed import run_speed, speed_markdown
from ..errors import BeyondBPError
from ..options import int_list, name_list
from ..tables import read_rows

#: Commands of two words: ``beyondbp bench speed`` is parsed by the parser named "bench speed".
SUBCOMMANDS = ("bench speed", "bench pipeline", "bench loop", "bench memory")


def add(commands) -> None:
    bench = commands.add_parser("bench", help="run a benchmark suite from benchmarks/suites/SUITE.toml")
    bench.add_argument("suite", help="suite name (e.g. f3-classification) or path to a .toml file")
    bench.add_argument("--seeds", type=int_list, help="override the suite's seeds, e.g. 1,2,3")
    bench.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    bench.add_argument("--report-only", action="store_true",
                       help="autopq: report the finished runs (naming the missing ones) without running any")
    bench.set_defaults(handler=cmd_bench, continues="the same command continues the suite")

    speed = commands.add_parser("bench speed", help="step time and memory of methods against the first")
    add_shape(speed, "benchmarks/results/speed-MODEL-depthD")
    speed.add_argument("--methods", type=name_list, default=["bp", "f3", "drtp", "dfa"], help="default bp,f3,drtp,dfa")
    speed.add_argument("--steps", type=int, default=30, help="timed steps per method (default 30)")
    speed.add_argument("--model", default="mlp", help="default mlp")
    speed.add_argument("--device", default="auto", help="auto, cpu, cuda")
    speed.set_defaults(handler=cmd_speed)

    pipeline = commands.add_parser("bench pipeline", help="layer-parallel F3 and DRTP against pipelined backprop")
    add_shape(pipeline, "benchmarks/results/pipeline")
    defaults = PIPELINE_DEFAULTS
    pipeline.add_argument("--stages", type=int, default=defaults["stages"], help="processes (default 2)")
    pipeline.add_argument("--microbatches", type=int, default=defaults["microbatches"],
                          help="per batch, for pipelined backprop (default 4)")
    pipeline.add_argument("--samples", type=int, default=defaults["samples"],
                          help="generated training samples (default 30720)")
    pipeline.add_argument("--schedule", choices=SCHEDULES, default=defaults["schedule"],
                          help="pipelined backprop's schedule (default gpipe)")
    pipeline.add_argument("--rounds", type=int, default=defaults["rounds"],
                          help="times every configuration runs, in turn; the median round is reported (default 3)")
    pipeline.set_defaults(handler=cmd_pipeline)

    loop = commands.add_parser("bench loop", help="backprop through beyondbp's Trainer against a plain PyTorch loop")
    loop.add_argument("--models", type=name_list, default=list(LOOP_MODELS), help=f"of {','.join(LOOP_MODELS)}")
    loop.add_argument("--samples", type=int, default=4096, help="generated images per epoch (default 4096)")
    loop.add_argument("--batch-size", type=int, default=128, help="default 128")
    loop.add_argument("--rounds", type=int, default=3, help="interleaved epochs of each loop (default 3)")
    loop.add_argument("--device", default="auto", help="auto, cpu, cuda")
    loop.add_argument("--out", type=Path, help="default benchmarks/results/loop")
    loop.set_defaults(handler=cmd_loop)

    memory = commands.add_parser("bench memory", help="step memory of each of a suite's methods (two batches each)")
    memory.add_argument("suite", help="suite name (e.g. lm) or path to a .toml file")
    memory.add_argument("--device", default="auto", help="auto, cpu, cuda")
    memory.set_defaults(handler=cmd_memory)

    results = commands.add_parser("results", help="regenerate benchmarks/RESULTS.md from benchmarks/results/")
    results.set_defaults(handler=cmd_results)


def add_shape(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The network's shape and the output folder, shared by ``bench speed`` and ``bench pipeline``."""
    parser.add_argument("--depth", type=int, default=8, help="hidden blocks (default 8)")
    parser.add_argument("--width", type=int, default=1024, help="input and hidden width (default 1024)")
    parser.add_argument("--batch-size", type=int, default=1024, help="default 1024")
    parser.add_argument("--out", type=Path, help=f"default {default_out}")


def updated_results() -> Path:
    return write_results_md(RESULTS_DIR, RESULTS_DIR.parent / "RESULTS.md")


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite in ("autopq", "autopq-advanced"):
        report = (run_autopq_suite(jobs=args.jobs, report_only=args.report_only) if args.suite == "autopq"
                  else run_advanced_suite())
        print(report.read_text(), end="")
        print(f"results: {report.parent}; updated {updated_results()}")
        return 0
    if args.report_only:
        raise BeyondBPError("--report-only applies to 'beyondbp bench autopq' only")
    suite = load_suite(args.suite, seeds=args.seeds)
    csv_path = run_suite(suite, n_jobs=args.jobs)
    print((csv_path.with_suffix(".md")).read_text(), end="")
    print(f"results: {csv_path}, {csv_path.with_suffix('.md')}; updated {updated_results()}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    out = args.out or RESULTS_DIR / "pipeline"
    run_pipeline_bench(out, args.depth, args.width, args.batch_size, args.stages, args.microbatches, args.samples,
                       args.schedule, rounds=args.rounds)
    print((out / "pipeline.md").read_text(), end="")
    print(f"results: {out / 'pipeline.csv'}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    out = args.out or RESULTS_DIR / f"speed-{args.model}-depth{args.depth}"
    rows = run_speed(args.methods, args.depth, args.width, args.batch_size, out, steps=args.steps,
                     model=args.model, device=args.device)
    print(speed_markdown(rows, json.loads((out / "meta.json").read_text())), end="")
    print(f"results: {out / 'speed.csv'}")
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    unknown = [m for m in args.models if m not in LOOP_MODELS]
    if unknown:
        raise BeyondBPError(f"bench loop: unknown model '{unknown[0]}'; known: {', '.join(LOOP_MODELS)}")
    out = args.out or RESULTS_DIR / "loop"
    rows = run_loop_bench(args.models, args.samples, args.batch_size, args.rounds, out, device=args.device)
    print(loop_markdown(rows, json.loads((out / "meta.json").read_text())), end="")
    print(f"results: {out / 'loop.csv'}")
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    path = run_memory_bench(load_suite(args.suite), RESULTS_DIR, device=args.device)
    meta = json.loads(path.with_suffix(".json").read_text())
    print(memory_markdown(read_rows(path), meta), end="")
    print(f"results: {path}; updated {updated_results()}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    print(f"wrote {updated_results()}")
    return 0
