"""Layer-parallel training of direct feedback with a signal known in advance (F³, DRTP, shallow learning):
each stage of contiguous blocks on its own process, updated as the forward pass reaches it.

F³ paper (Flügel et al. 2023), Sec. 3.3: because the error signal of a sample is known before its forward
pass (DRTP: the target; F³: the sample's row of the delayed buffer, written one epoch earlier), block ``i``
can form its weight gradient ``(s B_i ⊙ φ'(a_i)) h_{i-1}ᵀ`` and step as soon as its output exists. No
block waits for a later one, so blocks on different processes work on different batches at once:

    stage 0:  b1 b2 b3 b4 …
    stage 1:     b1 b2 b3 …      (batch m's activations reach stage 1 while stage 0 computes batch m + 1)

A stage sends a batch's output as soon as its last block has computed it and forms its blocks' gradients
afterwards (a step changes no output of the batch that caused it), so the next stage waits for one forward
pass, not a forward pass and an update, when the pipeline fills at each epoch's start.

Every stage builds the whole model from the seed, draws every feedback matrix ``B_i`` as the single-process
run does, keeps its own blocks (the others are freed) and its own optimizer, and reads the data itself (the
shuffle depends only on the seed and the epoch), so a stage needs from the previous one only its output.
What travels forward per sample is one activation row of the cut; nothing travels backwards.

The signal: a DRTP target every stage has. F³'s buffer is written by the last stage (after the output) and
read by every stage one epoch later: at each epoch's end the pipeline drains and the last stage broadcasts
the buffer (``C`` floats and one byte per sample, once per epoch), so the row written in epoch ``e`` is the
one read in epoch ``e + 1``. No update depends on a later block, so the weights equal those of the
single-process run with ``unlocked=True`` (each block stepped as soon as its gradient exists), bit for bit
when each process runs one thread.

After each epoch the test set flows through the stages (the last computes the metrics), every stage's
parameters and optimizer state are gathered by the last stage, which writes ``metrics.jsonl`` and one
checkpoint in the usual format (the whole model's ``state_dict``; the optimizers per stage), so ``resume``
and every tool that reads a checkpoint work. A stage that dies makes its neighbours fail within
``TIMEOUT``; torchrun then stops the rest.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checkpoint import CHECKPOINT_NAME, save_checkpoint
from ..data import Dataset, DataSplit, loaders
from ..energy import EnergyMeter
from ..errors import BeyondBPError, DivergenceError
from ..methods.direct import DirectFeedback
from ..metrics import evaluate
from ..train import METRICS_NAME, epoch_generator, resumable_checkpoint
from .link import Link
from .split import contiguous_split, describe, parameter_costs, timed_costs

#: Methods a pipeline runs: direct feedback whose signal exists before the forward pass.
PIPELINE_METHODS = ("f3 (its delayed signals)", "drtp", "shallow")


class Received(nn.Module):
    """The first module of the last stage's model in evaluation: the previous stage's output."""

    def __init__(self, link: Link, shape: tuple[int, ...]):
        super().__init__()
        self.link, self.shape = link, shape

    def forward(self, x: Tensor) -> Tensor:
        return self.link.receive((len(x), *self.shape))


def check_method(method) -> DirectFeedback:
    """The method, if a pipeline can run it; else why not."""
    label = getattr(method, "label", type(method).__name__)
    if not isinstance(method, DirectFeedback) or method.execution != "forward":
        raise BeyondBPError(f"stages need a signal known before the forward pass ({', '.join(PIPELINE_METHODS)}); "
                            f"{label} knows its error only after the forward pass, so every block would wait "
                            f"for the last stage")
    if method.reads_class_means:
        which = " with buffer_init class_mean" if method.options.buffer_init == "class_mean" else ""
        raise BeyondBPError(f"{method.label}{which} reads the class means of rows the last stage writes within the "
                            f"epoch, but stages share the buffer once per epoch: not supported with stages")
    return method


def check_sequence(method: DirectFeedback, model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """The attached method's ``(hidden blocks, head)``, if the model is a sequence of blocks a pipeline can cut."""
    if method.sequence is None:
        raise BeyondBPError(f"stages need a model that is an nn.Sequential cut at its children (one block per "
                            f"child); {type(model).__name__} with feedback points {method.points.names} is not")
    return method.sequence


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak resident memory (CPU) or peak allocated GPU memory, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (nested dicts, lists, tuples) moved to the CPU: what one stage sends
    another as an object must not name a GPU of its own."""
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value


class StageTrainer:
    """One stage of a pipelined run: this process's blocks, optimizer and link to its neighbours."""

    def __init__(self, model: nn.Module, method, make_optimizer, objective, data: DataSplit,
                 device: torch.device, out_dir: Path | None, run_info: dict[str, Any], balance: str = "parameters",
                 progress: bool = True, watts_per_core: float | None = None, upgrade_settings=None):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.last = self.world - 1
        self.device, self.out_dir, self.run_info, self.progress = device, out_dir, run_info, progress
        self.upgrade_settings = upgrade_settings
        self.objective, self.task, self.target_scale = objective, data.task, data.target_scale
        self.method = check_method(method)
        train = data.train
        if not isinstance(train, Dataset) or not isinstance(data.test, Dataset):
            raise BeyondBPError("stages take in-memory Datasets: every stage must draw the same shuffle, got "
                                + type(train).__name__)
        # stages after the first take their inputs from the previous stage: they iterate targets and indices only
        inputs_here = lambda d: d if self.rank == 0 else Dataset(d.x.new_empty(len(d), 0), d.t)
        self.train_data, self.test_data = inputs_here(train), inputs_here(data.test)
        self.method.attach(model, num_outputs=loaders.num_outputs(train, model, device),
                           num_samples=loaders.num_samples(train), task=data.task)
        hidden, head = check_sequence(self.method, model)
        blocks = [*hidden, head]
        x, _, _ = loaders.first_batch(train, device)
        self.method.draw_matrices(hidden, x[:2])
        self.shapes = self._output_shapes(blocks, x[:2])
        self.link = Link(self.rank, self.world, device)
        self.bounds, self.split_text = self._split(blocks, x, balance)
        mine = self.bounds[self.rank]
        self.blocks = [blocks[i] for i in mine]
        self.first_block = mine.start
        self.model = model
        self.owned = self._owned_keys(model, self.blocks)
        self.optimizer = make_optimizer([p for b in self.blocks for p in b.parameters()])
        self.method.after_block = self._step_block
        self.meter = EnergyMeter(device, **({} if watts_per_core is None else {"watts_per_core": watts_per_core}))
        self.history: list[dict[str, Any]] = []

    # -- setup -----------------------------------------------------------------------------------------

    @staticmethod
    @torch.no_grad()
    def _output_shapes(blocks: list[nn.Module], x: Tensor) -> list[tuple[int, ...]]:
        shapes, h = [], x
        for block in blocks:
            was_training = block.training
            h = block.eval()(h)
            block.train(was_training)
            shapes.append(tuple(h.shape[1:]))
        return shapes

    def _split(self, blocks: list[nn.Module], x: Tensor, balance: str) -> tuple[list[range], str]:
        """The cut, chosen on stage 0 (a measured one differs between processes) and sent to all."""
        plan: list[Any] = [None]
        if self.rank == 0:
            if balance == "time":
                costs = timed_costs(lambda i: self._time_block(blocks, i, x), len(blocks))
                unit = "measured time"
            else:
                costs, unit = parameter_costs(blocks), "parameters"
            bounds = contiguous_split(costs, self.world)
            plan = [([(r.start, r.stop) for r in bounds], describe(bounds, costs, unit))]
        self.link.collective(dist.broadcast_object_list, plan, src=0)
        ranges, text = plan[0]
        return [range(a, b) for a, b in ranges], text

    def _time_block(self, blocks: list[nn.Module], i: int, x: Tensor) -> None:
        """Block ``i``'s forward pass and local gradient on one batch, the parameters left as they were (the
        running statistics of batch norms do move: runs that must equal a single-process run balance by
        parameters)."""
        with torch.no_grad():
            h = x
            for block in blocks[:i]:
                h = block(h)
        s = torch.zeros(len(x), self.method.num_outputs, device=x.device)
        if i == len(blocks) - 1:
            self.objective(blocks[i](h), s).backward()
        else:
            step, self.method.after_block = self.method.after_block, None
            self.method.forward_blocks([blocks[i]], h, s, first=i)
            self.method.after_block = step
        for p in blocks[i].parameters():
            p.grad = None

    @staticmethod
    def _owned_keys(model: nn.Module, blocks: list[nn.Module]) -> list[str]:
        ids = {id(v) for b in blocks for v in b.state_dict(keep_vars=True).values()}
        return [k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids]

    def _free_other_blocks(self) -> None:
        mine = {id(m) for b in self.blocks for m in b.modules()}
        for module in self.model.children():
            if id(module) not in mine:
                module.to("meta")

    # -- training --------------------------------------------------------------------------------------

    def _step_block(self, params: list[nn.Parameter]) -> None:
        self.optimizer.step()
        for p in params:
            p.grad = None

    def fit(self, epochs: int, batch_size: int, seed: int, resume: bool) -> list[dict[str, Any]]:
        if resume:
            self.history = self._restore()
            if len(self.history) > epochs:
                raise BeyondBPError(f"cannot resume: {self.out_dir / CHECKPOINT_NAME} already holds "
                                    f"{len(self.history)} epochs, more than the {epochs} asked for")
        self._free_other_blocks()
        writes = self.rank == self.last and self.out_dir is not None
        if writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / METRICS_NAME, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.history)
        if self.progress and self.rank == 0:
            print(f"beyondbp: {self.world} stages: {self.split_text}", file=sys.stderr)
        steps = loaders.num_batches(self.train_data, batch_size)
        bar = tqdm(total=epochs * steps if steps else None, initial=len(self.history) * (steps or 0),
                   desc=f"{self.method.label} on {self.world} stages", dynamic_ncols=True, leave=False,
                   disable=None if self.progress and self.rank == self.last else True)
        with bar:
            for epoch in range(len(self.history) + 1, epochs + 1):
                record = self._train_epoch(epoch, batch_size, seed, bar)
                record.update(self._evaluate())
                if self.rank == self.last:
                    self.history.append(record)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.startswith("test_")})
                self._save(writes)
        return self.history

    def _train_epoch(self, epoch: int, batch_size: int, seed: int, bar) -> dict[str, Any]:
        idle, sent = self.link.idle_seconds, self.link.bytes_sent
        previous = self.history[-1] if self.history else {}
        started, joules = time.perf_counter(), self.meter.joules()
        total, count = 0.0, 0
        hidden = self.blocks[:-1] if self.rank == self.last else self.blocks
        for x, t, index in loaders.iterate(self.train_data, batch_size, epoch_generator(seed, epoch), self.device):
            t = self.objective.targets(t, self.method.num_outputs)
            h = x if self.rank == 0 else self.link.receive((len(x), *self.shapes[self.first_block - 1]))
            s = self.method.signal_before_pass(t, index)
            self.optimizer.zero_grad(set_to_none=True)
            send = self.link.send if self.rank != self.last else None  # the next stage starts before we update
            h = self.method.forward_blocks(hidden, h, s, first=self.first_block, deliver=send)
            if self.rank != self.last:
                if self.method.buffer is not None:  # the last stage writes these rows now: same clock here
                    self.method.buffer.advance(len(index))
                continue
            y = self.blocks[-1](h)
            loss = self.objective(y, t)
            loss.backward()
            value = loss.item()
            if not math.isfinite(value):
                raise DivergenceError(f"training diverged: loss is {value} at epoch {epoch} "
                                      f"({self.method.label} on {self.world} stages); last good checkpoint kept: "
                                      f"{self.out_dir / CHECKPOINT_NAME if self.out_dir else 'none'}")
            self.optimizer.step()
            if self.method.signal is not None:
                self.method.signal.after_pass(y.detach(), t, index, self.objective, self.method.buffer)
            total, count = total + value * len(x), count + len(x)
            bar.update()
        self.link.flush()
        self._share_buffer()
        seconds = time.perf_counter() - started
        stats = {"blocks": f"{self.bounds[self.rank].start}-{self.bounds[self.rank].stop - 1}",
                 "seconds": seconds, "idle_fraction": (self.link.idle_seconds - idle) / seconds,
                 "bytes_sent": self.link.bytes_sent - sent, "peak_memory_mb": peak_memory_mb(self.device),
                 "joules": self.meter.joules() - joules, "energy_source": self.meter.source}
        every = [None] * self.world if self.rank == self.last else None
        self.link.collective(dist.gather_object, stats, every, dst=self.last)
        if self.rank != self.last:
            return {}
        samples = loaders.num_samples(self.train_data)
        # RAPL reads the whole machine: stage 0's reading counts once; an estimate is per process: summed
        joules = every[0]["joules"] if "RAPL" in every[0]["energy_source"] else sum(s["joules"] for s in every)
        epoch_seconds = max(s["seconds"] for s in every)
        train_seconds = previous.get("train_seconds", 0.0) + epoch_seconds
        return {"epoch": epoch, "train_loss": total / count, "train_seconds": train_seconds,
                "train_joules": previous.get("train_joules", 0.0) + joules,
                "energy_source": every[0]["energy_source"], "samples_per_second": samples / epoch_seconds,
                "stages": [{"blocks": s["blocks"], "idle_fraction": s["idle_fraction"],
                            "bytes_sent_per_sample": s["bytes_sent"] / samples,
                            "peak_memory_mb": s["peak_memory_mb"]} for s in every]}

    def _share_buffer(self) -> None:
        """F³: the rows the last stage wrote this epoch reach every stage before the next epoch reads them
        (C floats and one byte per sample; with ``signal_decay`` also each row's 8-byte time stamp)."""
        buffer = self.method.buffer
        if buffer is None:
            return
        for tensor in buffer.state_dict().values():
            sent = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor  # gloo sends no bools
            self.link.collective(dist.broadcast, sent, src=self.last)
            if sent is not tensor:
                tensor.copy_(sent)
            if self.rank == self.last:
                self.link.bytes_sent += (self.world - 1) * sent.numel() * sent.element_size()

    def _evaluate(self) -> dict[str, float]:
        """The test set through every stage; the last stage's metrics (others return nothing)."""
        test = self.test_data
        if self.rank == self.last:
            chain = nn.Sequential(*([Received(self.link, self.shapes[self.first_block - 1])] if self.world > 1 else []),
                                  *self.blocks)
            return evaluate(chain, test, self.objective, self.task, self.target_scale,
                            device=self.device)
        with torch.no_grad():
            for block in self.blocks:
                block.eval()
            for x, _, _ in loaders.iterate(test, 1000, None, self.device):
                h = x if self.rank == 0 else self.link.receive((len(x), *self.shapes[self.first_block - 1]))
                for block in self.blocks:
                    h = block(h)
                self.link.send(h)
            self.link.flush()
            for block in self.blocks:
                block.train()
        return {}

    # -- checkpoints -----------------------------------------------------------------------------------

    def _save(self, writes: bool) -> None:
        state = self.model.state_dict()
        part = {"model": {k: state[k].cpu() for k in self.owned}, "optimizer": on_cpu(self.optimizer.state_dict())}
        parts = [None] * self.world if self.rank == self.last else None
        self.link.collective(dist.gather_object, part, parts, dst=self.last)
        if not writes:
            return
        with open(self.out_dir / METRICS_NAME, "a") as f:
            f.write(json.dumps(self.history[-1]) + "\n")
        save_checkpoint({
            "run_info": self.run_info, "history": self.history,
            "model": {k: v for p in parts for k, v in p["model"].items()},
            "stage_optimizers": [p["optimizer"] for p in parts], "stages": [[r.start, r.stop] for r in self.bounds],
            "method": self.method.state_dict(), "torch_rng": torch.get_rng_state(),
        }, self.out_dir / CHECKPOINT_NAME)

    def _restore(self) -> list[dict[str, Any]]:
        path = self.out_dir / CHECKPOINT_NAME if self.out_dir else None
        state = resumable_checkpoint(path, self.device, self.run_info, self.upgrade_settings)
        if state is None:
            return []
        if "stage_optimizers" not in state:
            raise BeyondBPError(f"cannot resume from {path}: it was written by a run without stages")
        if state["stages"] != [[r.start, r.stop] for r in self.bounds]:
            raise BeyondBPError(f"cannot resume from {path}: its stages held blocks {state['stages']}, this split "
                                f"gives {[[r.start, r.stop] for r in self.bounds]} (use the same balance)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["stage_optimizers"][self.rank])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["torch_rng"])
        return state["history"]
