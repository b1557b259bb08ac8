"""A run's configuration: the composition of the sections that the library's parts declare.

Each part owns its options and checks them (:class:`~beyondbp.options.Section`): the data
(:class:`~beyondbp.data.options.DataOptions`), the model (:class:`~beyondbp.models.options.ModelOptions`),
every method family (:data:`~beyondbp.methods.METHOD_SECTIONS`), the training recipe
(:class:`~beyondbp.optim.TrainingOptions`), the execution (:class:`~beyondbp.execution.ExecutionOptions`),
low-rank training (:class:`~beyondbp.lowrank_options.LowRankOptions`) and tracking
(:class:`~beyondbp.tracking.TrackingOptions`). :class:`RunConfig` holds all their fields under one flat
name each (``RunConfig(method="f3", signal="delayed_loss", lr=1e-3)``, ``--signal``, a suite's keys), and
gives each part its section back (``config.training_options()``). Adding an option to a section adds it everywhere.

Stored settings (checkpoints, summaries, searches) carry :data:`SCHEMA`; :func:`upgrade_settings` turns those
written by older versions into today's form, in one place.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

from .data.options import DataOptions
from .distributed import launched_world
from .errors import BeyondBPError
from .execution import ExecutionOptions
from .lowrank_options import LowRankOptions
from .lr_schedule import ScheduleOptions
from .methods import METHOD_SECTIONS, Method, build_method, method_options, method_section
from .methods.direct import DirectFeedback
from .models.options import ModelOptions
from .optim import TrainingOptions
from .options import Section, check_choices, compose, flat_name, option, setting
from .pipeline import check_method
from .tracking import TrackingOptions

#: The version of stored settings (``run_info``): 1 had no ``schema`` key and left out settings added later
#: at their defaults; 2 holds every setting.
SCHEMA = 3

#: Settings a resumed run may change: they do not change what is computed (or only where), or, like
#: ``eval_every``, only which epochs are evaluated.
VOLATILE = ("epochs", "eval_every", "device", "data_placement", "data_dir", "download", "execution",
            "watts_per_core", "log")


@dataclass
class MethodChoice(Section):
    method: str = option("bp", "method", "method or method:variant", flag=False)


SECTIONS = (MethodChoice, DataOptions, ModelOptions, *METHOD_SECTIONS, TrainingOptions, ScheduleOptions,
            ExecutionOptions, LowRankOptions, TrackingOptions)

_RunFields = compose("_RunFields", SECTIONS, "Every field of every section.")


@dataclass
class RunConfig(_RunFields):
    """Every setting of one run, flat; ``method`` may carry its variant: ``"f3:delayed_loss"``.

    The sections (:meth:`data_options`, :meth:`model_options`, :meth:`method_options`,
    :meth:`training_options`, :meth:`execution_options`, :meth:`lowrank_options`, :meth:`tracking_options`)
    are built from these fields, checking them; :meth:`validate` builds them all.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))

    def data_options(self) -> DataOptions:
        return DataOptions.of(self)

    def model_options(self) -> ModelOptions:
        return ModelOptions.of(self)

    def training_options(self) -> TrainingOptions:
        return TrainingOptions.of(self)

    def schedule_options(self) -> ScheduleOptions:
        return ScheduleOptions.of(self)

    def execution_options(self) -> ExecutionOptions:
        return ExecutionOptions.of(self)

    def lowrank_options(self) -> LowRankOptions:
        return LowRankOptions.of(self)

    def tracking_options(self) -> TrackingOptions:
        return TrackingOptions.of(self)

    def method_options(self) -> Section:
        """The method's section, from the fields its family declares (and the variant in ``method``)."""
        name = self.method.partition(":")[0]
        accepted = method_options(name)
        if self.unlocked and "unlocked" not in accepted:
            raise BeyondBPError(f"unlocked updates need a direct-feedback method with a signal known in advance, "
                                f"not {name}")
        fields = {f.name: getattr(self, flat_name(f)) for section in METHOD_SECTIONS
                  for f in dataclasses.fields(section) if f.name in accepted and f.name != "signal"}
        return method_section(self.method, signal=self.signal, **fields)

    def build_method(self) -> Method:
        return build_method(self.method, self.method_options())

    def inapplicable(self) -> list[str]:
        """Method settings changed from their defaults that this run's method does not take (a suite or
        ``compare`` shares settings among methods, so only ``beyondbp train`` refuses them)."""
        accepted = set(method_options(self.method.partition(":")[0]))
        return sorted({flat_name(f) for section in METHOD_SECTIONS for f in dataclasses.fields(section)
                       if f.name not in accepted and f.name != "signal"
                       and getattr(self, flat_name(f)) != f.default})

    def validate(self) -> Method:
        """Check every name and number before any data is loaded; returns the run's method, built once.
        Every setting with choices is checked, as argparse does, whatever the method."""
        check_choices(self)
        for section in (DataOptions, ModelOptions, TrainingOptions, ScheduleOptions, ExecutionOptions,
                        TrackingOptions):
            section.of(self)
        lowrank = self.lowrank_options()
        method = self.build_method()
        if self.stages > 1 and self.precision != "fp32":
            raise BeyondBPError(f"stages send float32 activations between processes: "
                                f"{setting('precision', self.precision)} is not supported with stages yet")
        if self.compile and (self.stages > 1 or self.lowrank is not None):
            raise BeyondBPError(f"{setting('compile')} runs one whole model as compiled; it cannot be combined with "
                                f"{'stages' if self.stages > 1 else 'low-rank training, which changes the model'}")
        if self.stages > 1 and self.lowrank is not None:
            raise BeyondBPError(f"stages cannot be combined with low-rank training ({self.lowrank})")
        if self.stages > 1:
            check_method(method)
        if self.lowrank == "ab" and self.nproc < 2 and launched_world() is None:
            raise BeyondBPError(f"{setting('lowrank', 'ab')} needs data-parallel training on at least 2 processes: "
                                f"set {setting('nproc', 2)} (or launch with torchrun)")
        lowrank.check_method(method)
        injects = isinstance(method, DirectFeedback) and method.signal is not None  # not shallow: nothing injected
        if self.optimizer == "sgd" and injects and not method.options.batch_mean and self.batch_size > 1:
            warnings.warn(f"{method.label} with sgd: each sample's feedback s B_i is summed over the batch, a step "
                          f"{self.batch_size} times the mean loss's gradient that bp follows at the same learning "
                          f"rate; --feedback-batch-mean divides it by the batch size", stacklevel=1)
        return method

    def run_info(self) -> dict[str, Any]:
        """The settings that a resumed run must share with its checkpoint (all but :data:`VOLATILE`), as
        stored (sequences as lists), with the :data:`SCHEMA` version."""
        info = {"schema": SCHEMA}
        for f in dataclasses.fields(self):
            if f.name not in VOLATILE:
                value = getattr(self, f.name)
                info[f.name] = list(value) if isinstance(value, tuple) else value
        return info

    def load_data(self):
        """The run's data (:meth:`DataOptions.load <beyondbp.data.options.DataOptions.load>`)."""
        return self.data_options().load()

    @classmethod
    def from_settings(cls, stored: dict[str, Any], **overrides: Any) -> RunConfig:
        """The configuration of stored settings (any schema), plus e.g. ``epochs`` or ``device``."""
        settings = upgrade_settings(stored)
        settings.pop("schema")
        return cls(**settings, **overrides)


def upgrade_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """Stored settings (a checkpoint's or summary's ``run_info``, a search's identity) in today's form.

    Schema 1 (no ``schema`` key) left out the settings added after runs were stored while they held their
    defaults, and every setting added since is new to both: each missing setting takes its default. Before
    schema 3, ``token_feedback`` defaulted to ``"shared"``; a stored ``"shared"`` reads as today's default
    ``"read-out"``: the same feedback for every model whose read-out uses every token (a resumed run of one that
    reads some positions only is refused by the method, see
    :meth:`~beyondbp.methods.direct.DirectFeedback.find_read_out`; stored matrices keep their form).
    """
    version = stored.get("schema", 1)
    if version > SCHEMA:
        raise BeyondBPError(f"settings of schema {version} were written by a newer beyondbp (this one reads up to "
                            f"{SCHEMA}): upgrade beyondbp")
    defaults = RunConfig().run_info()
    upgraded = {**defaults, **{k: v for k, v in stored.items() if k in defaults}, "schema": SCHEMA}
    if version < 3 and upgraded["token_feedback"] == "shared":
        upgraded["token_feedback"] = "read-out"
    return upgraded
