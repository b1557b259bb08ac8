"""Suite definitions (TOML) and the runs they expand to."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..errors import BeyondBPError
from ..experiment import RunConfig

SUITES_DIR = Path("benchmarks") / "suites"


@dataclass(frozen=True)
class Tuning:
    """Learning-rate selection: each lr trains on the training set minus a validation split."""

    lrs: tuple[float, ...]
    validation_fraction: float = 0.1
    seed: int = 0
    epochs_fraction: float = 0.25


@dataclass(frozen=True)
class Suite:
    """A benchmark: methods × data sets × depths × seeds with shared settings."""

    name: str
    description: str
    methods: tuple[str, ...]
    datasets: dict[str, dict[str, Any]]  # name -> {"epochs": N}
    depths: tuple[int, ...]
    width: int
    seeds: tuple[int, ...]
    tuning: Tuning
    model: str = "mlp"
    activation: str = "tanh"
    loss: str | None = None
    optimizer: str = "adam"
    batch_size: int = 50
    goal_gap_closed: float | None = None

    def model_label(self, depth: int) -> str:
        return f"{self.model}-{depth}x{self.width}"

    def config(self, dataset: str, depth: int, method: str, seed: int, lr: float, epochs: int) -> RunConfig:
        return RunConfig(method=method, dataset=dataset, model=self.model, hidden=(self.width,) * depth,
                         activation=self.activation, loss=self.loss, optimizer=self.optimizer,
                         batch_size=self.batch_size, lr=lr, epochs=epochs, seed=seed)

    def tuning_epochs(self, dataset: str) -> int:
        return max(1, round(self.datasets[dataset]["epochs"] * self.tuning.epochs_fraction))

    def cells(self) -> list[tuple[str, int, str]]:
        """Every (dataset, depth, method) combination, in table order."""
        return [(d, depth, m) for d in self.datasets for depth in self.depths for m in self.methods]


def load_suite(name_or_path: str, seeds: tuple[int, ...] | None = None, suites_dir: Path = SUITES_DIR) -> Suite:
    """Read ``suites_dir/NAME.toml`` (or a path to a .toml file); ``seeds`` overrides the suite's."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = Path(suites_dir) / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(suites_dir).glob("*.toml"))
        raise BeyondBPError(f"unknown suite '{name_or_path}' (no {path}); known suites: {', '.join(known) or 'none'}")
    raw = tomllib.loads(path.read_text())
    try:
        tuning = Tuning(**{k: tuple(v) if k == "lrs" else v for k, v in raw.pop("tuning").items()})
        suite = Suite(name=path.stem, tuning=tuning,
                      **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except (TypeError, KeyError) as error:
        raise BeyondBPError(f"suite {path} is malformed: {error}") from None
    if seeds:
        suite = dataclasses.replace(suite, seeds=tuple(seeds))
    for dataset, options in suite.datasets.items():
        DATASETS.get(dataset)
        if set(options) != {"epochs"}:
            raise BeyondBPError(f"suite {path}: [datasets.{dataset}] takes only 'epochs', got {sorted(options)}")
    for dataset, depth, method in suite.cells():
        suite.config(dataset, depth, method, suite.seeds[0], suite.tuning.lrs[0], 1).validate()
    return suite
