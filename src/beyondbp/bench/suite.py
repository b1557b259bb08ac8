"""Suite definitions (TOML) and the runs they expand to.

A suite file names the data sets (with their epochs), the models, the methods, the seeds
and a learning-rate grid. Every other top-level key is a run setting shared by all runs
(any field of :class:`~beyondbp.experiment.RunConfig`: ``activation``, ``loss``,
``optimizer``, ``batch_size``, ``model``, ...). Models are either MLPs given by ``depths``
and ``width`` (labelled ``mlp-DxW``) or named tables ``[models.LABEL]`` of run settings
(``hidden = [256, 4, 256]``, ``model = "vit"``, ``depth = 5``, ...). A method is a method
spec (``f3:delayed_loss``) or the label of a table ``[variants.LABEL]`` that sets
``method`` and any other run setting (``lowrank = "oialr"``).
"""

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
#: Run settings a suite decides per run, never as a shared, model or variant setting.
PER_RUN = ("dataset", "lr", "epochs", "seed")
RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)} - set(PER_RUN)


@dataclass(frozen=True)
class Tuning:
    """Learning-rate selection: each lr trains on the training set minus a validation split."""

    lrs: tuple[float, ...]
    validation_fraction: float = 0.1
    seed: int = 0
    epochs_fraction: float = 0.25


@dataclass(frozen=True)
class Suite:
    """A benchmark: methods × data sets × models × seeds with shared settings."""

    name: str
    description: str
    methods: tuple[str, ...]
    datasets: dict[str, dict[str, Any]]  # name -> {"epochs": N}
    models: dict[str, dict[str, Any]]  # label -> run settings
    seeds: tuple[int, ...]
    tuning: Tuning
    run: dict[str, Any] = field(default_factory=dict)  # settings shared by every run
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # method label -> run settings
    goal_gap_closed: float | None = None
    align: bool = False  # measure alignment with backprop at the end of every run
    #: A plot of the final metric against a number in the method (or model) labels:
    #: ``{"over": "method", "pattern": "ldfa:r(\\d+)", "label": "rank r"}``.
    sweep: dict[str, str] | None = None

    def config(self, dataset: str, model: str, method: str, seed: int, lr: float, epochs: int) -> RunConfig:
        settings = {**self.run, **self.models[model], **self.variants.get(method, {"method": method})}
        return RunConfig(**settings, dataset=dataset, lr=lr, epochs=epochs, seed=seed)

    def tuning_epochs(self, dataset: str) -> int:
        return max(1, round(self.datasets[dataset]["epochs"] * self.tuning.epochs_fraction))

    def cells(self) -> list[tuple[str, str, str]]:
        """Every (dataset, model label, method label) combination, in table order."""
        return [(d, m, method) for d in self.datasets for m in self.models for method in self.methods]

    def settings_text(self) -> str:
        """The shared settings and each model's, for reports."""
        shared = ", ".join(f"{k} {v}" for k, v in self.run.items())
        models = "; ".join(f"`{label}`: " + ", ".join(f"{k} {v}" for k, v in options.items())
                           for label, options in self.models.items())
        variants = "; ".join(f"`{label}`: " + ", ".join(f"{k} {v}" for k, v in options.items())
                             for label, options in self.variants.items())
        return f"{shared}; models {models}" + (f"; variants {variants}" if variants else "")


def _settings(raw: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(raw) - RUN_FIELDS)
    if unknown:
        raise BeyondBPError(f"{where}: unknown run settings {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(RUN_FIELDS))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _models(raw: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    depths, width = raw.pop("depths", None), raw.pop("width", None)
    tables = raw.pop("models", None)
    if (tables is None) == (depths is None):
        raise BeyondBPError(f"suite {path}: give either 'depths' and 'width' (MLPs) or [models.LABEL] tables")
    if tables is not None:
        return {label: _settings(options, f"suite {path}: [models.{label}]") for label, options in tables.items()}
    if width is None:
        raise BeyondBPError(f"suite {path}: 'depths' needs 'width'")
    return {f"{raw.get('model', 'mlp')}-{d}x{width}": {"hidden": (width,) * d} for d in depths}


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
        own = {k: raw.pop(k) for k in ("description", "methods", "datasets", "seeds", "goal_gap_closed", "align",
                                        "sweep") if k in raw}
        variants = {label: _settings(options, f"suite {path}: [variants.{label}]")
                    for label, options in raw.pop("variants", {}).items()}
        models = _models(raw, path)
        run = _settings(raw, f"suite {path}")
        suite = Suite(name=path.stem, tuning=tuning, models=models, run=run, variants=variants,
                      **{k: tuple(v) if isinstance(v, list) else v for k, v in own.items()})
    except (TypeError, KeyError) as error:
        raise BeyondBPError(f"suite {path} is malformed: {error}") from None
    if seeds:
        suite = dataclasses.replace(suite, seeds=tuple(seeds))
    if suite.sweep is not None and (suite.sweep.get("over") not in ("method", "model") or "pattern" not in suite.sweep):
        raise BeyondBPError(f"suite {path}: sweep needs over = \"method\" or \"model\" and a pattern")
    for label, options in suite.variants.items():
        if "method" not in options:
            raise BeyondBPError(f"suite {path}: [variants.{label}] needs a 'method'")
    for dataset, options in suite.datasets.items():
        DATASETS.get(dataset)
        if set(options) != {"epochs"}:
            raise BeyondBPError(f"suite {path}: [datasets.{dataset}] takes only 'epochs', got {sorted(options)}")
    for dataset, model, method in suite.cells():
        suite.config(dataset, model, method, suite.seeds[0], suite.tuning.lrs[0], 1).validate()
    return suite
