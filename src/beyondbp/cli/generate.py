"""``beyondbp generate``: text sampled from a trained language-model run (task lm), to read what a method learned."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..generate import sample_run


def add(commands) -> None:
    generate = commands.add_parser("generate", help="text from a trained language model (a run of task lm)")
    generate.add_argument("--run", type=Path, required=True, help="output folder of 'beyondbp train'")
    generate.add_argument("--prompt", default="\n", help="text to continue (default a new line)")
    generate.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    generate.add_argument("--temperature", type=float, default=1.0, help="logits divided by this (default 1)")
    generate.add_argument("--top-k", type=int, default=0, help="sample among the K likeliest tokens (default: all)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--data-dir", help="where data files are (also $BEYONDBP_DATA)")
    generate.add_argument("--device", default="auto")
    generate.set_defaults(handler=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    print(sample_run(args.run, args.prompt, args.tokens, args.temperature, args.top_k, args.seed, args.data_dir,
                     args.device))
    return 0
