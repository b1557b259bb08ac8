"""The ``beyondbp`` command, one module per family of commands: training (:mod:`.train`, :mod:`.compare`),
benchmarks (:mod:`.bench`), the forward-gradient tools (:mod:`.forward`), text from a language model
(:mod:`.generate`), AutoPQ
(:mod:`beyondbp.autopq.cli`) and ``list``.

User errors (unknown names, missing data, bad numbers) print one line and exit 2; a diverging run exits 1
with its message; neither shows a traceback. Settings named in messages are spelled as flags
(:func:`beyondbp.options.setting`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..autopq import cli as autopq_cli
from ..autopq.forecasters import FORECASTERS
from ..autopq.quantiles import BASELINES
from ..autopq.series import SOURCES
from ..data import DATASETS
from ..errors import BeyondBPError, show_warnings_in_one_line
from ..functions import FUNCTIONS
from ..methods import FEEDBACK_INITS, METHODS, SIGNALS
from ..methods.tangents import TANGENT_SAMPLERS
from ..models import ACTIVATIONS, MODELS
from ..objectives import OBJECTIVES
from ..optim import OPTIMIZERS
from ..options import FLAGS_ENVIRONMENT
from . import bench, compare, forward, generate, train
from .common import Parser, output_folder


def cmd_list(args) -> int:
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
    parser.add_argument("--version", action="version", version=f"beyondbp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add(commands)
    compare.add(commands)
    bench.add(commands)
    forward.add(commands)
    generate.add(commands)
    autopq_cli.add(commands, output_folder)
    commands.add_parser("list", help="methods, signals, feedback inits, data sets, models").set_defaults(
        handler=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if " ".join(argv[:2]) in bench.SUBCOMMANDS:  # two-word commands: 'bench speed', 'bench pipeline'
        argv = [" ".join(argv[:2]), *argv[2:]]
    args = build_parser().parse_args(argv)
    python_format = warnings.formatwarning  # a caller's own, given back at the end
    show_warnings_in_one_line()
    os.environ[FLAGS_ENVIRONMENT] = "1"  # messages name --flags, here and in the processes a run launches
    try:
        return args.handler(args)
    except BeyondBPError as error:
        print(f"beyondbp: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"beyondbp: interrupted{'; ' + args.continues if getattr(args, 'continues', None) else ''}",
              file=sys.stderr)
        return 130
    finally:
        os.environ.pop(FLAGS_ENVIRONMENT, None)
        warnings.formatwarning = python_format


if __name__ == "__main__":
    sys.exit(main())
