"""``beyondbp bench pipeline``: layer-parallel F³ and DRTP against backprop, in one run on this machine.

Five configurations train ``EPOCHS`` epochs of the same generated data (``samples`` Gaussian inputs of ``width``
features, 10 classes from a random linear teacher) with the same MLP (``depth`` hidden blocks of
``width``), batch size, optimizer and seed:

1. backprop in one process using every core (PyTorch's threads);
2. F³ in one process, forward execution (each block updated as the forward pass reaches it);
3. F³ on ``stages`` processes (``RunConfig.stages``; one thread each);
4. DRTP on the same stages;
5. backprop on the same stages through ``torch.distributed.pipelining`` (GPipe or 1F1B schedule, each batch
   cut into ``microbatches``; :mod:`.gpipe`).

Each runs in fresh processes, so that its peak memory is its own, and the five run ``rounds`` times in turn
(the machine's speed drifts over minutes; a configuration's figures are those of its round of median speed).
Reported: samples per second of training, the median over the epochs after the first (which warms up;
evaluation excluded: the machine's speed varies by about 10% between epochs), and per process its peak
memory, the bytes it sends per sample and the fraction of that epoch it waited. Writes ``OUT/pipeline.csv``,
``meta.json`` and ``pipeline.md`` (a section of RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..errors import BeyondBPError
from ..experiment import run
from ..tables import read_rows, write_rows
from ..train import METRICS_NAME

#: The flags of ``beyondbp bench pipeline`` besides ``--depth``, ``--width``, ``--batch-size`` and ``--out``.
PIPELINE_DEFAULTS = {"stages": 2, "microbatches": 4, "samples": 30720, "schedule": "gpipe", "rounds": 3}
SCHEDULES = ("gpipe", "1f1b")
RUNS = Path("runs") / "bench" / "pipeline"
#: Epochs of every configuration: the first warms up; the median speed of the others is reported.
EPOCHS = 4
#: The goal of issue 18 on 2 cores: F³ on 2 stages against BP in one process, and against pipelined BP.
GOALS = {"bp, 1 process": 1.4, "bp, stages": 1.25}


def generated_data(path: Path, width: int, samples: int, classes: int = 10, seed: int = 0) -> Path:
    """A classification set whose labels a linear teacher gives; ``.npz`` as users' files are read."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((width, classes)).astype(np.float32)
    x = rng.standard_normal((samples + 2048, width)).astype(np.float32)
    y = (x @ teacher).argmax(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x[:samples], y=y[:samples], x_test=x[samples:], y_test=y[samples:])
    return path


def _single(spec_path: str, out_dir: str) -> int:
    """One configuration in this process; writes ``OUT/single.json`` with its throughput and peak memory."""

    spec = json.loads(Path(spec_path).read_text())
    config = RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()})
    run(config, out_dir, progress=False)
    totals = [0.0] + [r["train_seconds"] for r in epochs_of(Path(out_dir))]
    speeds = [spec["samples"] / (b - a) for a, b in zip(totals[:-1], totals[1:])]
    result = {"samples_per_second": statistics.median(speeds[1:]),
              "threads": torch.get_num_threads(),
              "stages": [{"blocks": "all", "idle_fraction": 0.0, "bytes_sent_per_sample": 0.0,
                          "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}]}
    (Path(out_dir) / "single.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def epochs_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / METRICS_NAME).read_text().splitlines()]


def _launch(arguments: list[str], out: Path, torchrun: int = 0) -> None:
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}"] \
        if torchrun else [sys.executable]
    done = subprocess.run([*prefix, *arguments], stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise BeyondBPError(f"bench pipeline: {' '.join(arguments[:2])} failed (exit {done.returncode}) in {out}; "
                            f"see the messages above")


def run_pipeline_bench(out: Path, depth: int, width: int, batch_size: int, stages: int, microbatches: int,
                       samples: int, schedule: str = "gpipe", lr: float = 1e-4,
                       rounds: int = PIPELINE_DEFAULTS["rounds"],
                       runs: Path = RUNS) -> list[dict[str, Any]]:
    """Every configuration's runs (and the generated data) in ``runs``, ``rounds`` times in turn; the
    report in ``out``."""

    if schedule not in SCHEDULES:
        raise BeyondBPError(f"unknown schedule '{schedule}'; known: {', '.join(SCHEDULES)}")
    if rounds < 1:
        raise BeyondBPError(f"bench pipeline needs at least 1 round, got {rounds}")
    if stages < 2 or microbatches < 1 or batch_size % microbatches or samples < batch_size:
        raise BeyondBPError(f"bench pipeline needs at least 2 stages, a batch size divisible by the micro-batches "
                            f"and at least one batch of samples; got stages {stages}, batch {batch_size}, "
                            f"micro-batches {microbatches}, samples {samples}")
    data = generated_data(runs / "data.npz", width, samples)
    base = RunConfig(data=str(data), model="mlp", hidden=(width,) * depth, activation="tanh", epochs=EPOCHS,
                     batch_size=batch_size, lr=lr, seed=0)
    plan = [("bp", "1 process, all cores", "single"), ("f3", "1 process, forward execution", "single"),
            ("f3", f"{stages} stages", "stages"), ("drtp", f"{stages} stages", "stages"),
            ("bp", f"{stages} stages, {schedule} ({microbatches} micro-batches)", schedule)]
    measured: list[list[dict[str, Any]]] = [[] for _ in plan]
    for round_ in range(1, rounds + 1):  # in turn, so that a drift of the machine's speed hits every one alike
        for (method, how, kind), results in zip(plan, measured):
            folder = runs / f"{method}-{kind}" / (f"round-{round_}" if rounds > 1 else "")
            config = dataclasses.replace(base, method=method, stages=stages if kind == "stages" else 1)
            print(f"bench pipeline: round {round_} of {rounds}: {method}, {how}", file=sys.stderr)
            results.append(_measure(config, kind, folder, samples, microbatches, schedule, stages))
    rows = [_row(method, how, results) for (method, how, _), results in zip(plan, measured)]
    out.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out / "pipeline.csv")
    meta = {"finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "depth": depth, "width": width,
            "batch_size": batch_size, "stages": stages, "microbatches": microbatches, "samples": samples,
            "schedule": schedule, "lr": lr, "epochs": EPOCHS, "rounds": rounds,
            "command": f"beyondbp bench pipeline --depth {depth} --width {width} --batch-size {batch_size} "
                       f"--stages {stages} --microbatches {microbatches} --samples {samples} --schedule {schedule} "
                       f"--rounds {rounds}"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "pipeline.md").write_text(pipeline_markdown(rows, meta))
    from ..plots import plot_throughput

    plot_throughput([f"{r['method']}, {r['how']}" for r in rows], [r["samples_per_second"] for r in rows],
                    out / "pipeline.png", title=f"MLP {depth} x {width}, batch {batch_size}, {meta['machine']}")
    return rows


def _measure(config, kind: str, folder: Path, samples: int, microbatches: int, schedule: str,
             stages: int) -> dict[str, Any]:
    """One configuration's run in fresh processes: its speed (median epoch after the first) and per process
    its peak memory, bytes sent per sample and idle fraction."""

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "stages":
        run(config, folder, progress=False)
        timed = sorted(epochs_of(folder)[1:], key=lambda r: r["samples_per_second"])
        median = timed[len(timed) // 2]  # the epoch of median speed, with its stages' figures
        return {"samples_per_second": median["samples_per_second"], "stages": median["stages"], "threads": 1}
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"config": dataclasses.asdict(config), "samples": samples,
                                "microbatches": microbatches, "schedule": schedule}))
    if kind == "single":
        _launch(["-m", "beyondbp.bench.pipeline", str(spec), str(folder)], folder)
        return json.loads((folder / "single.json").read_text())
    _launch(["-m", "beyondbp.bench.gpipe", str(spec), str(folder)], folder, torchrun=stages)
    return json.loads((folder / "gpipe.json").read_text()) | {"threads": 1}


def _row(method: str, how: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration's line of the report: the round of median speed, with its per-process figures, and
    every round's speed."""
    median = sorted(results, key=lambda r: r["samples_per_second"])[(len(results) - 1) // 2]
    join = lambda key, fmt: " / ".join(format(s[key], fmt) for s in median["stages"])
    return {"method": method, "how": how, "processes": len(median["stages"]),
            "threads_per_process": median["threads"], "samples_per_second": median["samples_per_second"],
            "rounds": " / ".join(f"{r['samples_per_second']:.0f}" for r in results),
            "peak_memory_mb": join("peak_memory_mb", ".0f"),
            "bytes_sent_per_sample": join("bytes_sent_per_sample", ".0f"),
            "idle_fraction": join("idle_fraction", ".2f")}


def pipeline_markdown(rows: list[dict[str, Any]], meta: dict[str, Any], heading: str = "#",
                      image_prefix: str = "") -> str:
    first = float(rows[0]["samples_per_second"])
    piped_bp = float(rows[-1]["samples_per_second"])
    rounds = meta.get("rounds", 1)
    text = [f"{heading} Layer-parallel training (`bench pipeline`)", "",
            f"Training speed, the median over epochs 2 to {meta.get('epochs', 2)} of {meta['samples']} generated "
            f"samples, MLP of "
            f"{meta['depth']} hidden blocks of width {meta['width']}, batch {meta['batch_size']}, Adam lr "
            f"{meta['lr']:g}; {meta['machine']}, torch {meta['torch']}; finished {meta['finished']}. "
            f"Command: `{meta['command']}`.", "",
            *([f"The configurations ran {rounds} times in turn (the machine's speed drifts over minutes); a "
               f"configuration's figures are those of its round of median speed, and every round's speed is "
               f"listed.", ""] if rounds > 1 else []),
            "Per process (stage 0 / stage 1 / …): peak memory (resident on CPU), bytes sent per sample "
            "(activations forward, gradients backward, F³'s buffer once per epoch) and the fraction of the "
            "epoch spent waiting.", "",
            "| method | how | samples/s | against BP, 1 process | against BP on stages | peak memory (MiB) | "
            "bytes sent / sample | idle |" + (" samples/s, each round |" if rounds > 1 else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|" if rounds > 1 else "")]
    for r in rows:
        speed = float(r["samples_per_second"])
        text.append(f"| {r['method']} | {r['how']} | {speed:.0f} | {speed / first:.2f}× | {speed / piped_bp:.2f}× | "
                    f"{r['peak_memory_mb']} | {r['bytes_sent_per_sample']} | {r['idle_fraction']} |"
                    + (f" {r['rounds']} |" if rounds > 1 else ""))
    staged = next(r for r in rows if r["method"] == "f3" and "stages" in r["how"])
    f3 = float(staged["samples_per_second"])
    per_round = ""
    if rounds > 1:  # each round's F³ on stages against the same round's BP in one process
        ratios = [float(a) / float(b) for a, b in zip(staged["rounds"].split(" / "), rows[0]["rounds"].split(" / "))]
        per_round = f"; in each round against that round's backprop: {', '.join(f'{q:.2f}×' for q in ratios)}"
    text += ["", f"![samples per second]({image_prefix}pipeline.png)", "",
             f"F³ on {meta['stages']} stages: {f3 / first:.2f}× backprop in one process (goal "
             f"{GOALS['bp, 1 process']}×{per_round}) and {f3 / piped_bp:.2f}× backprop on the same stages (goal "
             f"{GOALS['bp, stages']}×).", ""]
    return "\n".join(text) + "\n"


def pipeline_section(results: Path, document_dir: Path) -> str:
    """The benchmark's report as a section of a document in ``document_dir`` (RESULTS.md)."""
    prefix = f"{results.relative_to(document_dir)}/" if results.is_relative_to(document_dir) else f"{results}/"
    return pipeline_markdown(read_rows(results / "pipeline.csv"), json.loads((results / "meta.json").read_text()),
                             heading="##", image_prefix=prefix)


if __name__ == "__main__":
    sys.exit(_single(sys.argv[1], sys.argv[2]))
