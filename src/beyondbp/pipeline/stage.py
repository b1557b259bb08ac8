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

A stage is the usual :class:`~beyondbp.train.Trainer` with a :class:`StageExecutor`: the trainer owns the
epoch, its progress, health checks, metrics and checkpoints; the executor runs this stage's share of each step
and gathers the stages' state. After each epoch the test set flows through the stages (the last computes the
metrics), every stage's parameters and optimizer state are gathered by the last stage, which writes
``metrics.jsonl`` and one checkpoint in the usual format (the whole model's ``state_dict``; the optimizers per
stage), so ``resume`` and every tool that reads a checkpoint work. A stage that dies makes its neighbours fail
within ``TIMEOUT``; torchrun then stops the rest.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data import Dataset, loaders
from ..errors import BeyondBPError
from ..executor import Batch, Executor
from ..methods.direct import DirectFeedback
from ..metrics import evaluate
from ..options import setting
from ..train import Trainer
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
        points = f" with feedback points {','.join(method.points.names)}" if method.points.names else ""
        raise BeyondBPError(f"stages need a model that is an nn.Sequential cut at its children (one block per "
                            f"child); {type(model).__name__}{points} is not")
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


class StageExecutor(Executor):
    """This process's stage of a pipelined run: its blocks, its optimizer (made by ``make_optimizer`` from the
    blocks' parameters once the cut is known) and its links to the neighbouring stages. ``balance`` chooses
    the cut (:mod:`.split`); ``announce`` prints it on stage 0. Each stage reports its own peak memory with
    the epoch (``stages``), so no step is profiled (with the CPU profiler around a stage's step, which sends
    and receives, a stage process died without a message)."""

    measures_step_memory = False

    def __init__(self, make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                 balance: str = "parameters", announce: bool = True):
        super().__init__()
        self.rank, self.stages = dist.get_rank(), dist.get_world_size()
        self.last = self.stages - 1
        self.make_optimizer, self.balance, self.announce = make_optimizer, balance, announce

    @property
    def writes(self) -> bool:
        return self.rank == self.last

    def describe(self, label: str) -> str:
        return f"{label} on {self.stages} stages"

    # -- setup -----------------------------------------------------------------------------------------

    def prepare(self, trainer: Trainer, train: Dataset) -> None:
        """Cut the attached model into stages and keep this one's blocks, their optimizer and the links."""
        if not isinstance(train, Dataset):
            raise BeyondBPError("stages take in-memory Datasets: every stage must draw the same shuffle, got "
                                + type(train).__name__)
        if trainer.recompute_bn:
            raise BeyondBPError(f"{setting('recompute_bn')} runs training batches through the whole model, which "
                                f"stages hold in parts: leave it at 0 with stages")
        method = check_method(trainer.method)
        hidden, head = check_sequence(method, trainer.model)
        blocks = [*hidden, head]
        x, _, _ = loaders.first_batch(train, trainer.device)
        method.find_read_out(trainer.model, x)
        method.draw_matrices(hidden, x[:2])
        self.shapes = self._output_shapes(blocks, x[:2])
        self.link = Link(self.rank, self.stages, trainer.device)
        self.bounds, self.split_text = self._split(blocks, x, trainer)
        mine = self.bounds[self.rank]
        self.blocks = [blocks[i] for i in mine]
        self.first_block = mine.start
        self.samples = loaders.num_samples(train)
        self.owned = self._owned_keys(trainer.model, self.blocks)
        trainer.optimizer = self.make_optimizer([p for b in self.blocks for p in b.parameters()])
        method.after_block = trainer.step_segment

    def begin(self, trainer: Trainer) -> None:
        """Free the other stages' blocks (after a resume has loaded the whole model)."""
        mine = {id(m) for b in self.blocks for m in b.modules()}
        for module in trainer.model.children():
            if id(module) not in mine:
                module.to("meta")
        if self.announce and self.rank == 0:
            print(f"beyondbp: {self.stages} stages: {self.split_text}", file=sys.stderr)

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

    def _split(self, blocks: list[nn.Module], x: Tensor, trainer: Trainer) -> tuple[list[range], str]:
        """The cut, chosen on stage 0 (a measured one differs between processes) and sent to all."""
        plan: list[Any] = [None]
        if self.rank == 0:
            if self.balance == "time":
                costs = timed_costs(lambda i: self._time_block(blocks, i, x, trainer), len(blocks))
                unit = "measured time"
            else:
                costs, unit = parameter_costs(blocks), "parameters"
            bounds = contiguous_split(costs, self.stages)
            plan = [([(r.start, r.stop) for r in bounds], describe(bounds, costs, unit))]
        self.link.collective(dist.broadcast_object_list, plan, src=0)
        ranges, text = plan[0]
        return [range(a, b) for a, b in ranges], text

    @staticmethod
    def _time_block(blocks: list[nn.Module], i: int, x: Tensor, trainer: Trainer) -> None:
        """Block ``i``'s forward pass and local gradient on one batch, the parameters left as they were (the
        running statistics of batch norms do move: runs that must equal a single-process run balance by
        parameters)."""
        method = trainer.method
        with torch.no_grad():
            h = x
            for block in blocks[:i]:
                h = block(h)
        tokens = () if method.tokens is None else (method.tokens,)
        s = torch.zeros(len(x), *tokens, method.signal_width, device=x.device)
        if i == len(blocks) - 1:
            trainer.objective(blocks[i](h), s).backward()
        else:
            method.forward_blocks([blocks[i]], h, s, first=i)
        for p in blocks[i].parameters():
            p.grad = None

    @staticmethod
    def _owned_keys(model: nn.Module, blocks: list[nn.Module]) -> list[str]:
        ids = {id(v) for b in blocks for v in b.state_dict(keep_vars=True).values()}
        return [k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids]

    def _here(self, data: Dataset) -> Dataset:
        """``data`` as this stage reads it: stages after the first take their inputs from the previous stage
        and iterate targets and indices only."""
        return data if self.rank == 0 else Dataset(data.x.new_empty(len(data), 0), data.t, data.num_classes)

    def _receive(self, count: int) -> Tensor:
        return self.link.receive((count, *self.shapes[self.first_block - 1]))

    # -- steps -----------------------------------------------------------------------------------------

    def batches(self, train: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
                augment: Callable[[Tensor], Tensor] | None = None) -> Iterator[Batch]:
        """The epoch's batches (the first stage's inputs augmented; later stages receive theirs)."""
        self._idle, self._sent = self.link.idle_seconds, self.link.bytes_sent
        for x, t, index in loaders.iterate(self._here(train), batch_size, generator, device):
            yield (augment(x) if augment is not None and self.rank == 0 else x), t, index

    def gradients(self, trainer: Trainer, x: Tensor, t: Tensor, index: Tensor) -> float | None:
        """This stage's blocks on the batch; the last stage adds the head and returns the loss."""
        method, last = trainer.method, self.rank == self.last
        t = trainer.objective.targets(t, method.num_outputs)
        h = x if self.rank == 0 else self._receive(len(x))
        loss = method.stage_pass(self.blocks[:-1] if last else self.blocks, h, t, index, self.first_block,
                                 deliver=None if last else self.link.send,  # the next stage starts before we update
                                 head=self.blocks[-1] if last else None, objective=trainer.objective)
        return None if loss is None else loss.item()

    def end_steps(self, trainer: Trainer) -> None:
        """Drain the pipeline; F³: the rows the last stage wrote this epoch reach every stage before the next
        epoch reads them (C floats and one byte per sample; with ``signal_decay`` also each row's 8-byte time
        stamp)."""
        self.link.flush()
        for tensor in trainer.method.delayed_state():
            sent = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor  # gloo sends no bools
            self.link.collective(dist.broadcast, sent, src=self.last)
            if sent is not tensor:
                tensor.copy_(sent)
            if self.rank == self.last:
                self.link.bytes_sent += (self.stages - 1) * sent.numel() * sent.element_size()

    def epoch_cost(self, trainer: Trainer, seconds: float, joules: float, source: str) -> dict[str, Any]:
        """The slowest stage's seconds, the run's energy and, per stage, its blocks, idle fraction, bytes sent
        per sample and peak memory (on the last stage, which keeps the records)."""
        stats = {"blocks": f"{self.bounds[self.rank].start}-{self.bounds[self.rank].stop - 1}",
                 "seconds": seconds, "idle_fraction": (self.link.idle_seconds - self._idle) / seconds,
                 "bytes_sent": self.link.bytes_sent - self._sent, "peak_memory_mb": peak_memory_mb(trainer.device),
                 "joules": joules, "energy_source": source}
        every = [None] * self.stages if self.rank == self.last else None
        self.link.collective(dist.gather_object, stats, every, dst=self.last)
        if self.rank != self.last:
            return {"seconds": seconds, "joules": joules, "energy_source": source}
        # RAPL reads the whole machine: stage 0's reading counts once; an estimate is per process: summed
        joules = every[0]["joules"] if "RAPL" in every[0]["energy_source"] else sum(s["joules"] for s in every)
        seconds = max(s["seconds"] for s in every)
        return {"seconds": seconds, "joules": joules, "energy_source": every[0]["energy_source"],
                "samples_per_second": self.samples / seconds,
                "stages": [{"blocks": s["blocks"], "idle_fraction": s["idle_fraction"],
                            "bytes_sent_per_sample": s["bytes_sent"] / self.samples,
                            "peak_memory_mb": s["peak_memory_mb"]} for s in every]}

    def evaluate(self, trainer: Trainer, eval_set: Dataset) -> dict[str, float]:
        """The test set through every stage; the last stage's metrics (others return nothing)."""
        test = self._here(eval_set)
        if self.rank == self.last:
            received = [Received(self.link, self.shapes[self.first_block - 1])] if self.stages > 1 else []
            return evaluate(nn.Sequential(*received, *self.blocks), test, trainer.objective, trainer.task,
                            trainer.target_scale, device=trainer.device)
        with torch.no_grad():
            for block in self.blocks:
                block.eval()
            for x, _, _ in loaders.iterate(test, 1000, None, trainer.device):
                h = x if self.rank == 0 else self._receive(len(x))
                for block in self.blocks:
                    h = block(h)
                self.link.send(h)
            self.link.flush()
            for block in self.blocks:
                block.train()
        return {}

    # -- checkpoints -----------------------------------------------------------------------------------

    def checkpoint(self, trainer: Trainer) -> dict[str, Any]:
        """Every stage's parameters and optimizer state, gathered by the last stage."""
        state = trainer.model.state_dict()
        part = {"model": {k: state[k].cpu() for k in self.owned},
                "optimizer": on_cpu(trainer.optimizer.state_dict())}
        parts = [None] * self.stages if self.rank == self.last else None
        self.link.collective(dist.gather_object, part, parts, dst=self.last)
        if self.rank != self.last:
            return {}
        return {"model": {k: v for p in parts for k, v in p["model"].items()},
                "stage_optimizers": [p["optimizer"] for p in parts], "stages": [[r.start, r.stop] for r in self.bounds]}

    def restore(self, trainer: Trainer, state: dict[str, Any], path: Path) -> None:
        if "stage_optimizers" not in state:
            raise BeyondBPError(f"cannot resume from {path}: it was written by a run without stages")
        if state["stages"] != [[r.start, r.stop] for r in self.bounds]:
            raise BeyondBPError(f"cannot resume from {path}: its stages held blocks {state['stages']}, this split "
                                f"gives {[[r.start, r.stop] for r in self.bounds]} (use the same balance)")
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["stage_optimizers"][self.rank])
