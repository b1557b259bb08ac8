"""``beyondbp train`` (one run) and ``beyondbp align`` (a trained run's alignment with backprop)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..build import restore_run
from ..checkpoint import CHECKPOINT_NAME
from ..diagnostics import alignment
from ..distributed import launched_rank, launched_world
from ..errors import BeyondBPError
from ..experiment import run
from ..methods import method_flags
from .common import add_run_options, config_from, data_name, markdown_table, output_folder


def add(commands) -> None:
    train = commands.add_parser("train", help="train one model with one method")
    train.add_argument("--method", default="bp",
                       help="bp, shallow, fa, dfa, drtp, f3 (or f3:SIGNAL), fg (or fg:VARIANT)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, help="output folder (default runs/METHOD-DATASET-seedS)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--align-every", type=int, default=0, metavar="N",
                       help="every N epochs, log alignment with backprop into metrics.jsonl and plot alignment.png")
    add_run_options(train)
    train.set_defaults(handler=cmd_train, continues="run again with --resume to continue")

    align = commands.add_parser("align", help="alignment of a trained run's method with backprop")
    align.add_argument("--run", type=Path, required=True, help="output folder of 'beyondbp train'")
    align.add_argument("--batch-size", type=int, default=256, help="first N training samples (default 256)")
    align.add_argument("--data-dir", help="where data files are (also $BEYONDBP_DATA)")
    align.add_argument("--device", default="auto")
    align.set_defaults(handler=cmd_align)


def unused_folder(default: Path) -> Path:
    """``default``, or ``default-2``, ``-3``, ... if it holds a run: a new run without ``--out`` starts afresh
    beside the earlier ones (``--resume`` without ``--out`` continues ``default`` itself)."""
    folder, number = default, 1
    while (folder / CHECKPOINT_NAME).is_file():
        number += 1
        folder = default.with_name(f"{default.name}-{number}")
    return folder


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from(args, args.method, args.seed)
    config.validate()
    unused = config.inapplicable()
    if unused and launched_rank() == 0:  # one command line serves every method of a comparison
        method = args.method.partition(":")[0]
        given = ", ".join("--" + name.replace("_", "-") for name in unused)
        options = ", ".join(method_flags(method)) or "none"
        print(f"beyondbp: notice: {given} {'does' if len(unused) == 1 else 'do'} not apply to method {method} and "
              f"{'is' if len(unused) == 1 else 'are'} ignored; its options: {options}", file=sys.stderr)
    if launched_world() is not None and config.stages == 1:  # launched by torchrun: one rank of the run
        config.nproc = launched_world()
    default = Path("runs") / f"{args.method.replace(':', '-')}-{data_name(args)}-seed{args.seed}"
    out = output_folder(args.out, default if args.resume else unused_folder(default))
    if not args.resume and (out / CHECKPOINT_NAME).is_file():  # a run's hours are not written over by a typo
        raise BeyondBPError(f"{out} already holds a run ({CHECKPOINT_NAME}): --resume continues it, another --out "
                            f"starts a new one (or delete the folder)")
    if args.resume and not (out / CHECKPOINT_NAME).is_file() and launched_rank() == 0:
        print(f"beyondbp: --resume: no checkpoint in {out}; starting from epoch 1", file=sys.stderr)
    summary = run(config, out, resume=args.resume, progress=not args.no_progress, align_every=args.align_every)
    if not summary or (config.stages == 1 and launched_rank() != 0):
        return 0  # another process reports: rank 0, or the last stage
    metric = summary["metric"]
    print(f"{summary['method']} on {summary['dataset']}: {metric} {summary[metric]:.4f} "
          f"(best {summary['best_' + metric]:.4f}) after {summary['epochs']} epochs, "
          f"{summary['train_seconds']:.1f} s and {summary['train_joules']:.0f} J training "
          f"({summary['energy_source']})"
          + (f"; delayed buffer {summary['buffer_bytes'] / 2**20:.1f} MiB" if "buffer_bytes" in summary else "")
          + f"; outputs in {out}")
    if "split" in summary:
        print(f"{config.stages} stages, {summary['samples_per_second']:.0f} samples/s in the last epoch: "
              f"{summary['split']}")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    state, _, data, model, method, objective = restore_run(args.run, args.data_dir, args.device)
    device = next(model.parameters()).device
    n = min(args.batch_size, len(data.train))
    report = alignment(model, method, data.train.x[:n].to(device), data.train.t[:n].to(device),
                       torch.arange(n, device=device), objective)
    (args.run / "alignment.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{method.label} after epoch {len(state['history'])}, on the first {n} training samples of {data.name}:")
    print(markdown_table(["layer", "cosine", "angle (deg)", "norm ratio"],
                         [[layer, f"{v['cosine']:.4f}", f"{v['angle']:.1f}", f"{v['norm_ratio']:.4g}"]
                          for layer, v in report["layers"].items()]))
    for s in report.get("signals", []):
        print(f"signal at point {s['point']}: cosine with the true gradient {s['cosine_mean']:.4f} "
              f"± {s['cosine_std']:.4f} over samples")
    print(f"written: {args.run / 'alignment.json'}")
    return 0
