"""Backprop on pipeline stages through ``torch.distributed.pipelining`` (the existing engine): the anchor of
``beyondbp bench pipeline``, one process per stage under torchrun.

Each process builds the run's seeded model, keeps the blocks of its stage (cut like a run with ``stages``:
:func:`~beyondbp.pipeline.split.contiguous_split` by parameter count), and trains: every batch is split into
micro-batches that the schedule (GPipe: every micro-batch's forward pass, then every backward pass; or 1F1B)
moves through the stages, activations forward and their gradients back; then each stage steps its own
optimizer. Every epoch after the first (which warms up) is timed; the median one is reported. The last
process writes ``OUT/gpipe.json``: samples per second, the last epoch's mean loss, and per stage its peak
memory, bytes sent per sample and idle fraction (1 − process CPU time / wall time: each process runs one
thread, so time without CPU use is time spent waiting for a neighbour).

    python -m torch.distributed.run --standalone --nproc-per-node S -m beyondbp.bench.gpipe SPEC.json OUT
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from ..build import build_run
from ..config import RunConfig
from ..data import loaders
from ..distributed import TIMEOUT
from ..optim import OPTIMIZERS
from ..pipeline.split import contiguous_split, parameter_costs
from ..streams import epoch_generator

SCHEDULE_CLASSES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


def main(spec_path: str, out_dir: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    config = RunConfig(**spec["config"])
    dist.init_process_group("gloo", timeout=TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    data = config.load_data()
    model, _, _, objective = build_run(config, data, device)
    blocks = list(model.children())
    bounds = contiguous_split(parameter_costs(blocks), world)
    part = nn.Sequential(*[blocks[i] for i in bounds[rank]])
    optimizer = OPTIMIZERS.get(config.optimizer)(part.parameters(), config.lr, config.momentum, config.weight_decay)
    microbatches = spec["microbatches"]
    size = config.batch_size // microbatches  # shapes given, not inferred (the inference fails now and then)
    shape = lambda cut: torch.empty(size, *cut_shape(blocks, cut, data), device=device)
    start, stop = bounds[rank].start, bounds[rank].stop
    stage = PipelineStage(part, rank, world, device, input_args=shape(start), output_args=shape(stop),
                          input_grads=shape(start) if rank > 0 else None,
                          output_grads=shape(stop) if rank < world - 1 else None)
    schedule = SCHEDULE_CLASSES[spec["schedule"]](stage, microbatches, loss_fn=lambda y, t: objective(y, t))
    num_outputs = data.train.num_outputs
    batches = lambda epoch: [(x, objective.targets(t, num_outputs)) for x, t, _ in
                             loaders.iterate(data.train, config.batch_size, epoch_generator(config.seed, epoch), device)
                             if len(x) == config.batch_size]  # equal micro-batches: the schedule's shapes are fixed
    timed = []  # (wall, cpu) of every epoch after the first, which warms up
    for epoch in range(1, config.epochs + 1):
        losses: list[torch.Tensor] = []
        dist.barrier()
        started, cpu = time.perf_counter(), time.process_time()
        for x, t in batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            if rank == 0:
                schedule.step(x)
            elif rank == world - 1:
                schedule.step(target=t, losses=losses)
            else:
                schedule.step()
            optimizer.step()
        if epoch > 1:
            timed.append((time.perf_counter() - started, time.process_time() - cpu))
    walls = [w for w, _ in timed]
    wall, cpu = timed[walls.index(statistics.median_high(walls))]
    samples = len(batches(config.epochs)) * config.batch_size
    # forward: this stage's output to the next; backward: the gradient of its input to the previous
    width = lambda cut: math.prod(cut_shape(blocks, cut, data))
    sent = 4 * ((width(bounds[rank].stop) if rank < world - 1 else 0) + (width(bounds[rank].start) if rank > 0 else 0))
    stats = {"blocks": f"{bounds[rank].start}-{bounds[rank].stop - 1}", "wall": wall,
             "idle_fraction": max(0.0, 1 - cpu / wall), "bytes_sent_per_sample": sent,
             "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    every = [None] * world if rank == world - 1 else None
    dist.gather_object(stats, every, dst=world - 1)
    if rank == world - 1:
        result = {"samples_per_second": samples / max(s["wall"] for s in every), "samples": samples,
                  "train_loss": torch.stack(losses).mean().item(),
                  "stages": [{k: v for k, v in s.items() if k != "wall"} for s in every]}
        (Path(out_dir) / "gpipe.json").write_text(json.dumps(result, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return 0


@torch.no_grad()
def cut_shape(blocks: list[nn.Module], cut: int, data) -> tuple[int, ...]:
    """The shape of one sample entering block ``cut`` (``len(blocks)``: the output)."""
    h = data.train.x[:1]
    for block in blocks[:cut]:
        h = block(h)
    return tuple(h.shape[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
