"""Experiment tracking: the small interface the training loop reports to, and TensorBoard behind it.

The :class:`~beyondbp.train.Trainer` calls a :class:`RunLogger` with every training step's loss and every
epoch's record (test metrics, learning rate, seconds and joules of the epoch, bytes sent per step, low-rank
ranks and trainable fraction, alignment per layer), and once at the end with the run's settings and final
metrics. Another tracker (Weights & Biases, MLflow) plugs in as any object with these three methods; only
the process that writes files (rank 0) is given one.

``--log tensorboard`` writes TensorBoard event files to ``OUT/tensorboard``; the runs of a suite all live
under ``runs/bench/SUITE``, so ``tensorboard --logdir runs/bench/SUITE`` shows them side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .energy import DEFAULT_WATTS_PER_CORE
from .errors import BeyondBPError
from .options import Section, option
from .registry import Registry

LOG_FOLDER = "tensorboard"


class RunLogger(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None:
        """Record ``values`` (name -> number) at ``step`` (a training step, or an epoch for ``epoch/`` names)."""

    def hyperparameters(self, settings: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's settings with its final metrics, once."""

    def close(self) -> None: ...


LOGGERS: Registry = Registry("logger")


@LOGGERS.register("tensorboard", "TensorBoard event files in OUT/tensorboard (torch.utils.tensorboard)")
class TensorBoardLogger:
    def __init__(self, log_dir: Path | str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise BeyondBPError("logging to TensorBoard needs the tensorboard package: "
                                "pip install 'beyondbp[tracking]'") from None

        log_dir = Path(log_dir)
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            probe = log_dir / ".writable"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise BeyondBPError(f"cannot write the log directory {log_dir}: {error.strerror or error}") from None
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def hyperparameters(self, settings: dict[str, Any], metrics: dict[str, float]) -> None:
        shown = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()
                 if v is not None}
        self.writer.add_hparams(shown, {f"final/{k}": v for k, v in metrics.items()}, run_name=".")

    def close(self) -> None:
        self.writer.close()


class FanOut:
    """Several loggers as one."""

    def __init__(self, *loggers: RunLogger):
        self.loggers = loggers

    def scalars(self, values: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.scalars(values, step)

    def hyperparameters(self, settings: dict[str, Any], metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.hyperparameters(settings, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def make_logger(name: str, out_dir: Path | str) -> RunLogger:
    """The logger ``name`` writing under ``out_dir / tensorboard``."""
    return LOGGERS.get(name)(Path(out_dir) / LOG_FOLDER)


def epoch_scalars(record: dict[str, Any], lr: float, previous: dict[str, Any] | None) -> dict[str, float]:
    """The numbers of one epoch's record (see :meth:`~beyondbp.train.Trainer.fit`) as named scalars."""
    values = {f"epoch/{k}": float(v) for k, v in record.items()
              if k.startswith(("test_", "train_loss", "trainable_fraction", "comm_bytes")) and _number(v)}
    values["epoch/lr"] = lr
    for total, per_epoch in (("train_seconds", "epoch/seconds"), ("train_joules", "epoch/joules")):
        if total in record:
            values[per_epoch] = record[total] - (previous or {}).get(total, 0.0)
    for layer, rank in (record.get("ranks") or {}).items():
        values[f"rank/{layer}"] = float(rank)
    for layer, measured in ((record.get("alignment") or {}).get("layers") or {}).items():
        values[f"alignment/{layer}"] = float(measured["cosine"])
    return values


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrackingOptions(Section):
    """What follows a run besides ``metrics.jsonl``: a logger, and the energy estimate's rated power."""

    log: str | None = option(None, "tracking", "track the run: tensorboard (event files in OUT/tensorboard)",
                             choices=tuple(LOGGERS.names()))
    watts_per_core: float = option(DEFAULT_WATTS_PER_CORE, "tracking", "energy estimate where RAPL is not "
                                                                       "readable: watts per busy CPU core")

    def check(self) -> None:
        super().check()
        if not self.watts_per_core > 0:
            raise BeyondBPError(f"watts per core must be positive, got {self.watts_per_core}")
