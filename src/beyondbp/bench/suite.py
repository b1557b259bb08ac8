"""Suite definitions (TOML) and the runs they expand to.

A suite file names the data sets (with their epochs), the models, the methods, the seeds
and a learning-rate grid (a suite on a user's file, ``data = PATH``, labels that one data set as it
likes). Every other top-level key is a run setting shared by all runs
(any field of :class:`~beyondbp.experiment.RunConfig`: ``activation``, ``loss``,
``optimizer``, ``batch_size``, ``model``, ...). Models are either MLPs given by ``depths``
and ``width`` (labelled ``mlp-DxW``) or named tables ``[models.LABEL]`` of run settings
(``hidden = [256, 4, 256]``, ``model = "vit"``, ``depth = 5``, ...). A method is a method
spec (``f3:delayed_loss``) or the label of a table ``[variants.LABEL]`` that sets
``method`` and any other run setting (``lowrank = "oialr"``). ``extends = "NAME"`` starts from suite NAME
and replaces what the file gives (e.g. a ``tune`` search instead of NAME's grid).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data import DATASETS
from ..errors import BeyondBPError

SUITES_DIR = Path("benchmarks") / "suites"
#: Run settings a suite decides per run, never as a shared, model or variant setting.
PER_RUN = ("dataset", "lr", "epochs", "seed")
RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)} - set(PER_RUN)


@dataclass(frozen=True)
class Tuning:
    """Learning-rate selection on the training set minus a validation split: every lr of a grid (``[tuning]
    lrs = [...]``), or Optuna's TPE over a range with the same trials and epochs for every method (``tune =
    { lr = [low, high], trials = N, epochs = E }``, see :mod:`beyondbp.tune`)."""

    lrs: tuple[float, ...] = ()
    validation_fraction: float = 0.1
    seed: int = 0
    epochs_fraction: float = 0.25
    lr_range: tuple[float, float] | None = None
    trials: int = 0
    epochs: int | None = None  # epochs of every tuning run (default: epochs_fraction of the data set's)

    def first_lr(self) -> float:
        return self.lr_range[0] if self.lr_range is not None else self.lrs[0]


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
        if self.tuning.epochs is not None:
            return self.tuning.epochs
        return max(1, round(self.datasets[dataset]["epochs"] * self.tuning.epochs_fraction))

    def cells(self) -> list[tuple[str, str, str]]:
        """Every (dataset, model label, method label) combination, in table order."""
        return [(d, m, method) for d in self.datasets for m in self.models for method in self.methods]

    def settings_text(self) -> str:
        """The shared settings, each model's and each variant's that the suite runs, for reports."""
        shared = ", ".join(f"{k} {v}" for k, v in self.run.items())
        models = "; ".join(f"`{label}`: " + ", ".join(f"{k} {v}" for k, v in options.items())
                           for label, options in self.models.items())
        variants = "; ".join(f"`{label}`: " + ", ".join(f"{k} {v}" for k, v in options.items())
                             for label, options in self.variants.items() if label in self.methods)
        return f"{shared}; models {models}" + (f"; variants {variants}" if variants else "")


def _settings(raw: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(raw) - RUN_FIELDS)
    if unknown:
        raise BeyondBPError(f"{where}: unknown run settings {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(RUN_FIELDS))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _models(raw: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    depths = raw.pop("depths", None)
    width = raw.pop("width", None) if depths is not None else None  # else a run setting (a transformer's width)
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
        if not Path(suites_dir).is_dir():
            raise BeyondBPError(f"unknown suite '{name_or_path}': no folder {suites_dir} here; run bench in a clone "
                                f"of the repository, or give the path of a .toml file")
        known = sorted(p.stem for p in Path(suites_dir).glob("*.toml"))
        raise BeyondBPError(f"unknown suite '{name_or_path}' (no {path}); known suites: {', '.join(known) or 'none'}")
    raw = _extended(tomllib.loads(path.read_text()), path, Path(suites_dir))
    try:
        tuning = _tuning(raw.pop("tuning", {}), raw.pop("tune", None), path)
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
        if "data" not in suite.run:  # with a user's file (data = PATH) the label is the suite's choice
            DATASETS.get(dataset)
        if set(options) != {"epochs"}:
            raise BeyondBPError(f"suite {path}: [datasets.{dataset}] takes only 'epochs', got {sorted(options)}")
    for dataset, model, method in suite.cells():
        suite.config(dataset, model, method, suite.seeds[0], suite.tuning.first_lr(), 1).validate()
    return suite


def _extended(raw: dict[str, Any], path: Path, suites_dir: Path) -> dict[str, Any]:
    """A suite that says ``extends = "NAME"`` is suite NAME with this file's top-level keys and tables in place
    of NAME's (one level); its ``tune`` search replaces NAME's grid of learning rates."""
    name = raw.pop("extends", None)
    if name is None:
        return raw
    base_path = suites_dir / f"{name}.toml"
    if not base_path.is_file():
        known = sorted(p.stem for p in suites_dir.glob("*.toml"))
        raise BeyondBPError(f"suite {path} extends unknown suite '{name}'; known suites: {', '.join(known)}")
    base = tomllib.loads(base_path.read_text())
    if "extends" in base:
        raise BeyondBPError(f"suite {path} extends {base_path}, which extends another: one level only")
    if "tune" in raw and "tuning" in base:
        base["tuning"] = {k: v for k, v in base["tuning"].items() if k != "lrs"}
    return {**base, **raw}


def _tuning(grid: dict[str, Any], search: dict[str, Any] | None, path: Path) -> Tuning:
    """``[tuning]`` (a grid of lrs, the split, the seed) and/or ``tune = {lr, trials, epochs}`` (a search)."""
    settings = {k: tuple(v) if k == "lrs" else v for k, v in grid.items()}
    if search is not None:
        unknown = set(search) - {"lr", "trials", "epochs"}
        if unknown or "lr" not in search or "trials" not in search:
            raise BeyondBPError(f"suite {path}: tune takes lr = [low, high], trials = N and optionally epochs = E")
        low, high = search["lr"]
        if not 0 < low < high or search["trials"] < 1 or search.get("epochs", 1) < 1:
            raise BeyondBPError(f"suite {path}: tune needs 0 < low < high, at least one trial and one epoch")
        settings.update(lr_range=(float(low), float(high)), trials=search["trials"], epochs=search.get("epochs"))
    if not settings.get("lrs") and search is None:
        raise BeyondBPError(f"suite {path} needs [tuning] lrs = [...] or tune = {{ lr = [low, high], trials = N }}")
    return Tuning(**settings)
