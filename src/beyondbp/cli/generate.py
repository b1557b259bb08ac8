"""``beyondbp generate``: text sampled from a trained language-model run (task lm), to read what a method learned."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..build import build_run, config_from_checkpoint
from ..checkpoint import CHECKPOINT_NAME, load_checkpoint
from ..errors import BeyondBPError
from ..execution import resolve_device
from ..generate import sample


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
    path = args.run / CHECKPOINT_NAME
    if not path.is_file():
        raise BeyondBPError(f"no checkpoint at {path}; give the output folder of 'beyondbp train'")
    device = resolve_device(args.device)
    state = load_checkpoint(path, device)
    config = config_from_checkpoint(state, data_dir=args.data_dir, device=args.device)
    data = config.load_data()
    if data.task != "lm" or data.vocabulary is None:
        raise BeyondBPError(f"{args.run} trained on {data.name} (task {data.task}); generate needs a run on a text "
                            f"corpus (task lm)")
    model, _, _, _ = build_run(config, data, device)
    model.load_state_dict(state["model"])
    vocabulary = data.vocabulary
    ids = sample(model, vocabulary.encode(args.prompt).tolist(), args.tokens, data.train.tokens, args.temperature,
                 args.top_k, args.seed, device)
    print(args.prompt + vocabulary.decode(ids))
    return 0
