"""Training methods (gradient estimators) and their registry.

Presets are compositions: ``dfa``, ``drtp``, ``f3`` and ``shallow`` are
:class:`DirectFeedback` with different signals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BeyondBPError
from ..options import Section, flat_name
from ..registry import Registry
from .backprop import Backprop
from .base import Method, StepResult
from .direct import DirectFeedback
from .direct_options import DEFAULT_F3_SIGNAL, DirectOptions, F3Options
from .feedback_init import FEEDBACK_INITS
from .forward_gradient import ForwardGradient, ForwardGradientOptions, parse_variant
from .layerwise import (
    FEEDBACK_RULES,
    SIGN_SYMMETRY,
    FeedbackAlignment,
    LayerwiseOptions,
    LowRankFeedback,
    LowRankFeedbackOptions,
    SignSymmetry,
)
from .signals import SIGNALS


@dataclass
class NoOptions(Section):
    """The options of a method that takes none (bp)."""


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its section of options and what builds it from a section."""

    options: type[Section]
    build: Callable[[Section], Method]


#: Every method family's section of options (a run's configuration composes them).
METHOD_SECTIONS = (LayerwiseOptions, F3Options, ForwardGradientOptions, LowRankFeedbackOptions)

METHODS: Registry[MethodEntry] = Registry("method")


def register(name: str, help: str, options: type[Section], build: Callable[[Section], Method]) -> None:
    METHODS.register(name, help)(MethodEntry(options, build))


register("bp", "backpropagation: the exact gradient", NoOptions, lambda options: Backprop())
register("fa", "feedback alignment: fixed random B replaces W^T layer by layer (Lillicrap et al. 2016)",
         LayerwiseOptions, FeedbackAlignment)
for _variant, _magnitude in SIGN_SYMMETRY.items():
    register(_variant, f"sign-concordant feedback sign(W) with {_magnitude} magnitude (Liao et al. 2016; biotorch's "
                       f"{_variant})", LayerwiseOptions,
             lambda options, variant=_variant: SignSymmetry(variant, options))
register("ldfa", "low-dimensional feedback P Q of rank r, learned (Hanut & Kadmon 2025); variants ldfa:r10-local",
         LowRankFeedbackOptions, LowRankFeedback)
register("shallow", "only the output block learns; hidden blocks stay at their initialisation", DirectOptions,
         lambda options: DirectFeedback(None, options, name="shallow"))
register("dfa", "direct feedback alignment: the current output error to every hidden block (Nokland 2016)",
         DirectOptions, lambda options: DirectFeedback("current_error", options, name="dfa"))
register("drtp", "direct random target projection: the target to every hidden block (Frenkel et al. 2021)",
         DirectOptions, lambda options: DirectFeedback("one_hot_target", options, name="drtp"))
register("f3", f"feed-forward with delayed feedback (Flugel et al. 2023); default signal {DEFAULT_F3_SIGNAL}",
         F3Options, lambda options: DirectFeedback(options.signal or DEFAULT_F3_SIGNAL, options, name="f3"))
register("fg", "forward gradient: k tangents by forward-mode AD, no backward pass (Baydin et al. 2022; Flugel et al. "
               "2024); variants fg:k4-projection-activities", ForwardGradientOptions, ForwardGradient)


def parse_ldfa_variant(variant: str) -> dict:
    """``"r10-local"`` -> ``{"rank": 10, "feedback_rule": "local"}`` (parts in any order)."""
    options: dict = {}
    for token in filter(None, variant.split("-")):
        if token[:1] == "r" and token[1:].isdigit():
            options["rank"] = int(token[1:])
        elif token in FEEDBACK_RULES:
            options["feedback_rule"] = token
        else:
            raise BeyondBPError(f"unknown ldfa variant part '{token}'; use rN and/or {' or '.join(FEEDBACK_RULES)}, "
                                f"e.g. ldfa:r10-local")
    return options


def method_section(spec: str, signal: str | None = None, **options) -> Section:
    """The section of options of method ``spec`` (``"name"`` or ``"name:variant"``) built from ``options``,
    the variant and ``signal``: every keyword and value is checked here."""
    name, _, variant = spec.partition(":")
    entry = METHODS.get(name)
    if variant and name == "fg":
        options.update(parse_variant(variant))
    elif variant and name == "ldfa":
        options.update(parse_ldfa_variant(variant))
    elif variant:
        if signal is not None and signal != variant:
            raise BeyondBPError(f"method '{spec}' names signal '{variant}' but signal '{signal}' was also given")
        signal = variant
    if signal is not None:
        if name != "f3":
            raise BeyondBPError(f"a signal applies to f3 only, not to '{name}' (dfa = f3:current_error, "
                                f"drtp = f3:one_hot_target)")
        options["signal"] = signal
    known = method_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BeyondBPError(f"method '{name}' takes no option {', '.join(repr(k) for k in unknown)}; its options: "
                            f"{', '.join(known) or 'none'}")
    return entry.options(**options)


def make_method(spec: str, signal: str | None = None, **options) -> Method:
    """Build a method from ``"name"`` or ``"name:signal"`` (e.g. ``"f3:delayed_loss"``).

    ``options`` are the fields of the method's section (:func:`method_options` lists them); one that the
    method does not take is refused with the list of those it does. Only ``f3`` takes a signal; ``fg`` and
    ``ldfa`` take variants such as ``"fg:k4-projection-activities"`` and ``"ldfa:r4-local"``.
    """
    return build_method(spec, method_section(spec, signal, **options))


def build_method(spec: str, options: Section) -> Method:
    """Method ``spec`` from its checked section of options (:func:`method_section`)."""
    return METHODS.get(spec.partition(":")[0]).build(options)


def method_options(name: str) -> list[str]:
    """The keyword options that method ``name`` (without variant) takes: its section's fields."""
    return METHODS.get(name).options.names()


def method_flags(name: str) -> list[str]:
    """The command-line flags of method ``name``'s options (``--feedback-normalize`` for ``normalize``)."""
    return ["--" + flat_name(f).replace("_", "-") for f in dataclasses.fields(METHODS.get(name).options)
            if f.metadata["flag"]]


__all__ = [
    "METHODS", "METHOD_SECTIONS", "SIGNALS", "FEEDBACK_INITS", "DEFAULT_F3_SIGNAL", "Method", "StepResult",
    "Backprop", "DirectFeedback", "FeedbackAlignment", "ForwardGradient", "LowRankFeedback", "SignSymmetry",
    "build_method", "make_method", "method_flags", "method_options", "method_section",
]
