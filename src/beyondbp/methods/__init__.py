"""Training methods (gradient estimators) and their registry.

Presets are compositions: ``dfa``, ``drtp``, ``f3`` and ``shallow`` are
:class:`DirectFeedback` with different signals.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from ..errors import BeyondBPError
from ..registry import Registry
from .backprop import Backprop
from .base import Method, StepResult
from .direct import DirectFeedback
from .feedback_init import FEEDBACK_INITS
from .forward_gradient import ForwardGradient, parse_variant
from .layerwise import FEEDBACK_RULES, SIGN_SYMMETRY, FeedbackAlignment, LowRankFeedback, SignSymmetry
from .signals import SIGNALS

DEFAULT_F3_SIGNAL = "delayed_error_one_hot"

METHODS: Registry[Callable[..., Method]] = Registry("method")


@METHODS.register("bp", "backpropagation: the exact gradient")
def bp() -> Method:
    return Backprop()


@METHODS.register("fa", "feedback alignment: fixed random B replaces W^T layer by layer (Lillicrap et al. 2016)")
def fa(feedback_init: str = "kaiming_uniform", normalize: bool = False) -> Method:
    return FeedbackAlignment(feedback_init, normalize)


def _sign_symmetry(variant: str):
    def build(feedback_init: str = "kaiming_uniform", normalize: bool = False) -> Method:
        return SignSymmetry(variant, feedback_init, normalize)

    return build


for _variant, _magnitude in SIGN_SYMMETRY.items():
    METHODS.register(_variant, f"sign-concordant feedback sign(W) with {_magnitude} magnitude "
                               f"(Liao et al. 2016; biotorch's {_variant})")(_sign_symmetry(_variant))


@METHODS.register("ldfa", "low-dimensional feedback P Q of rank r, learned (Hanut & Kadmon 2025); variants "
                          "ldfa:r10-local")
def ldfa(rank: int = 10, feedback_rule: str = "normative", feedback_lr: float = 1e-3) -> Method:
    return LowRankFeedback(rank, feedback_rule, feedback_lr)


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


def _direct(name: str, signal: str | None):
    def build(feedback_init: str = "kaiming_uniform", normalize: bool = False, batch_mean: bool = False,
              execution: str = "auto", unlocked: bool = False, token_feedback: str = "shared",
              feedback_points: Sequence[str] | None = None, center_signal: bool = False,
              feedback_exclude: Sequence[str] = ()) -> Method:
        return DirectFeedback(signal, feedback_init, normalize, batch_mean, execution, unlocked, name=name,
                              token_feedback=token_feedback, feedback_points=feedback_points,
                              center_signal=center_signal, feedback_exclude=feedback_exclude)

    return build


METHODS.register("shallow", "only the output block learns; hidden blocks stay at their initialisation")(
    _direct("shallow", None)
)

METHODS.register("dfa", "direct feedback alignment: the current output error to every hidden block (Nokland 2016)")(
    _direct("dfa", "current_error")
)
METHODS.register("drtp", "direct random target projection: the target to every hidden block (Frenkel et al. 2021)")(
    _direct("drtp", "one_hot_target")
)


@METHODS.register("f3", f"feed-forward with delayed feedback (Flugel et al. 2023); default signal {DEFAULT_F3_SIGNAL}")
def f3(signal: str = DEFAULT_F3_SIGNAL, feedback_init: str = "kaiming_uniform", normalize: bool = False,
       batch_mean: bool = False, execution: str = "auto", unlocked: bool = False, token_feedback: str = "shared",
       feedback_points: Sequence[str] | None = None, buffer_init: str = "target", center_signal: bool = False,
       feedback_exclude: Sequence[str] = (), signal_decay: float = 1.0) -> Method:
    return DirectFeedback(signal, feedback_init, normalize, batch_mean, execution, unlocked, name="f3",
                          token_feedback=token_feedback, feedback_points=feedback_points, buffer_init=buffer_init,
                          center_signal=center_signal, feedback_exclude=feedback_exclude,
                          signal_decay=signal_decay)



@METHODS.register("fg", "forward gradient: k tangents by forward-mode AD, no backward pass (Baydin et al. 2022; "
                        "Flugel et al. 2024); variants fg:k4-projection-activities")
def fg(tangents: int = 1, aggregation: str = "mean", sampler: str = "normal", perturb: str = "weights",
       angle: float | None = None, batched: bool = True, feedback_points: Sequence[str] | None = None) -> Method:
    return ForwardGradient(tangents, aggregation, sampler, perturb, angle, batched, feedback_points)


def make_method(spec: str, signal: str | None = None, **options) -> Method:
    """Build a method from ``"name"`` or ``"name:signal"`` (e.g. ``"f3:delayed_loss"``).

    ``options`` are the keyword arguments of the method's constructor (:func:`method_options`
    lists them); one that the method does not take is refused with the list of those it does.
    Only ``f3`` takes a signal; ``fg`` and ``ldfa`` take variants such as
    ``"fg:k4-projection-activities"`` and ``"ldfa:r4-local"``.
    """
    name, _, variant = spec.partition(":")
    builder = METHODS.get(name)
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
        SIGNALS.get(signal)
        options["signal"] = signal
    known = method_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BeyondBPError(f"method '{name}' takes no option {', '.join(repr(k) for k in unknown)}; its options: "
                            f"{', '.join(known) or 'none'}")
    if "feedback_init" in options:
        FEEDBACK_INITS.get(options["feedback_init"])
    return builder(**options)


def method_options(name: str) -> list[str]:
    """The keyword options that method ``name`` (without variant) takes."""
    return list(inspect.signature(METHODS.get(name)).parameters)


__all__ = [
    "METHODS", "SIGNALS", "FEEDBACK_INITS", "DEFAULT_F3_SIGNAL", "Method", "StepResult",
    "Backprop", "DirectFeedback", "FeedbackAlignment", "ForwardGradient", "LowRankFeedback", "SignSymmetry",
    "make_method", "method_options",
]
