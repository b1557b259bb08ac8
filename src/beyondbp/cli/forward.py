"""The forward-gradient tools: ``beyondbp approx`` (estimates against the exact gradient) and
``beyondbp optimize`` (descent on a closed-form test function)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..approx import approximation_quality, write_approx
from ..errors import BeyondBPError
from ..functions import optimize
from ..methods.aggregation import AGGREGATIONS
from ..methods.tangents import TANGENT_SAMPLERS
from ..options import int_list, name_list
from .common import markdown_table


def add(commands) -> None:
    approx = commands.add_parser("approx", help="forward-gradient estimates against the exact gradient")
    approx.add_argument("--dims", type=int_list, default=(64, 1024), help="dimensions n (default 64,1024)")
    approx.add_argument("--tangents", type=int_list, default=(1, 4, 16, 64), help="k values (default 1,4,16,64)")
    approx.add_argument("--aggregations", type=name_list, default=["mean", "sum", "projection"],
                        help="default mean,sum,projection")
    add_tangent_options(approx)
    approx.add_argument("--samples", type=int, default=100, help="draws per setting (default 100)")
    approx.add_argument("--out", type=Path, default=Path("runs") / "approx", help="default runs/approx")
    approx.set_defaults(handler=cmd_approx)

    opt = commands.add_parser("optimize", help="gradient descent on a closed-form test function with forward gradients")
    opt.add_argument("--function", default="sphere", help="sphere, rosenbrock or styblinski-tang (default sphere)")
    opt.add_argument("--dim", type=int, default=64, help="dimension n (default 64)")
    opt.add_argument("--tangents", type=int, default=4, help="k (default 4)")
    opt.add_argument("--aggregation", default="projection", help="single, mean, sum or projection (default projection)")
    add_tangent_options(opt)
    opt.add_argument("--steps", type=int, default=1000, help="default 1000")
    opt.add_argument("--lr", type=float, default=0.01, help="default 0.01")
    opt.set_defaults(handler=cmd_optimize)


def add_tangent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sampler", default="normal", help="normal, rademacher, basis or angle")
    parser.add_argument("--angle", type=float, help="pairwise tangent angle in degrees (sampler angle)")
    parser.add_argument("--seed", type=int, default=0)


def cmd_approx(args: argparse.Namespace) -> int:
    for how in args.aggregations:
        if how not in AGGREGATIONS:
            raise BeyondBPError(f"unknown aggregation '{how}'; known aggregations: {', '.join(AGGREGATIONS)}")
    TANGENT_SAMPLERS.get(args.sampler)
    rows = approximation_quality(args.dims, args.tangents, args.aggregations, args.sampler, args.samples,
                                 args.seed, args.angle)
    if not rows:
        raise BeyondBPError("no (n, k, aggregation) combination applies; projection needs k <= n")
    write_approx(rows, args.out)
    print(markdown_table(["n", "k", "aggregation", "cosine", "norm ratio"],
                         [[str(r["n"]), str(r["k"]), r["aggregation"],
                           f"{r['cosine_mean']:.4f} ± {r['cosine_std']:.4f}",
                           f"{r['norm_ratio_mean']:.4g} ± {r['norm_ratio_std']:.2g}"] for r in rows]))
    print(f"results: {args.out / 'approx.csv'}, plot: {args.out / 'approx.png'}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    result = optimize(args.function, args.dim, args.tangents, args.aggregation, args.steps, args.lr,
                      args.sampler, args.angle, args.seed)
    print(f"{args.function}, n={args.dim}, {args.steps} steps, lr {args.lr:g}: forward gradient "
          f"(k={args.tangents}, {args.aggregation}) reaches {result.final:.6g}; "
          f"exact gradient {result.exact_final:.6g}; "
          f"known minimum {result.minimum:.6g} (gap {result.final - result.minimum:.4g})")
    return 0
