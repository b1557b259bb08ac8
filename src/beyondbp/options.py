"""Options declared once, next to the code that uses them.

A *section* is a small dataclass of :func:`option` fields owned by one part of the library (a method
family, the data, the model, the optimizer, the execution, low-rank training, tracking); building it checks
every value (:meth:`Section.check`, the one place each value is checked). A run's configuration
(:class:`beyondbp.config.RunConfig`) is the composition of sections (:func:`compose`), and the command
line's flags and the suites' keys are generated from the same declarations:

    @dataclass
    class TrainingOptions(Section):
        lr: float = option(1e-3, "training", "learning rate")

        def check(self) -> None:
            super().check()
            if not self.lr > 0: raise BeyondBPError(...)

``add_options(parser, TrainingOptions)`` then adds ``--lr`` (type float, default 1e-3, in the group
"training"), and ``from_args(TrainingOptions, args)`` builds the dataclass from the parsed flags. A field may
carry a different name in the composed configuration (``flat``): the direct-feedback option ``normalize`` is
``feedback_normalize`` there and ``--feedback-normalize`` on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from typing import Any

from .errors import BeyondBPError


def option(default: Any, group: str, help: str, *, choices: Sequence[str] | None = None,
           metavar: str | None = None, flag: bool = True, flat: str | None = None) -> Any:
    """A dataclass field with its command-line declaration.

    Args:
        group: the help section of its flag.
        choices: the allowed values, checked by argparse and from Python by :func:`check_choices` (registries
            are checked by the objects).
        flag: False for settings that the command line sets another way (``--method``, ``--seed``).
        flat: its name in a composed configuration and on the command line, where that differs from the
            field's own (see :func:`compose`).
    """
    meta = {"group": group, "help": help, "choices": choices, "metavar": metavar, "flag": flag, "flat": flat}
    if isinstance(default, (list, dict, set)):
        raise TypeError("give sequences as tuples")
    return dataclasses.field(default=default, metadata=meta)


#: Set (inherited by launched processes) when messages are for the command line: see :func:`setting`.
FLAGS_ENVIRONMENT = "BEYONDBP_MESSAGES_AS_FLAGS"


def setting(name: str, value: Any = None) -> str:
    """A setting as the user spells it, for messages: ``nproc=2`` from Python, ``--nproc 2`` on the command line
    (which sets :data:`FLAGS_ENVIRONMENT`)."""
    if os.environ.get(FLAGS_ENVIRONMENT):
        return "--" + name.replace("_", "-") + ("" if value is None else f" {value}")
    if value is None:
        return name
    quoted = isinstance(value, str) and not value.isupper()  # an upper-case value is a placeholder: PATH
    return f"{name}={value!r}" if quoted else f"{name}={value}"


def flat_name(f: dataclasses.Field) -> str:
    """A section field's name in the composed configuration."""
    return f.metadata.get("flat") or f.name


class Section:
    """Base of option sections: a dataclass of :func:`option` fields, checked when built.

    Subclasses extend :meth:`check`; sequences given as lists are stored as tuples, None for a sequence as
    the empty one.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) or (value is None and isinstance(f.default, tuple)):
                setattr(self, f.name, tuple(value or ()))
        self.check()

    def check(self) -> None:
        """Every value of the section is valid; raises :class:`~beyondbp.errors.BeyondBPError` naming it."""
        check_choices(self)

    @classmethod
    def names(cls) -> list[str]:
        """The section's own field names (a method's keyword options)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def of(cls, config: Any):
        """This section read from a composed configuration (by each field's flat name)."""
        return cls(**{f.name: getattr(config, flat_name(f)) for f in dataclasses.fields(cls)})


def compose(name: str, sections: Sequence[type], doc: str) -> type:
    """One flat dataclass with the fields of every section, each under its flat name (a field that several
    sections share, such as ``feedback_init``, appears once and must be declared identically)."""
    fields: dict[str, tuple[str, Any, dataclasses.Field]] = {}
    for section in sections:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            key = flat_name(f)
            if key in fields and (fields[key][2].default, dict(fields[key][2].metadata)) != (f.default,
                                                                                             dict(f.metadata)):
                raise TypeError(f"option {key} is declared differently by two sections")
            fields[key] = (key, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
    composed = dataclasses.make_dataclass(name, list(fields.values()))
    composed.__doc__ = doc
    return composed


def check_choices(config: Any) -> None:
    """Every field of ``config`` declared with ``choices`` holds one of them (None where that is its default):
    the Python API's counterpart of argparse's check."""
    for f in dataclasses.fields(config):
        allowed, value = f.metadata.get("choices"), getattr(config, f.name)
        if allowed and value not in allowed and not (value is None and f.default is None):
            raise BeyondBPError(f"unknown {f.name} '{value}'; known: {', '.join(allowed)}")


def int_list(text: str) -> tuple[int, ...]:
    """``"500,500"`` -> ``(500, 500)``; empty or ``none`` -> ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def float_list(text: str) -> tuple[float, ...]:
    """``"0.1,0.5,0.9"`` -> ``(0.1, 0.5, 0.9)``."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def name_list(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; at least one name."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected at least one name")
    return names


def _parser_type(annotation: Any):
    """The argparse ``type`` for a field's annotation (``int | None`` -> int, ``tuple[int, ...]`` -> int_list)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return {int: int_list, float: float_list}.get(typing.get_args(annotation)[0], name_list)
    return annotation


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line flags."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per declared field of ``cls``, grouped as declared, defaults shown in the help."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in flag_fields(cls):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        name = "--" + flat_name(f).replace("_", "-")
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        help = meta["help"] + (f" (default {shown})" if f.default not in (None, False, ()) else "")
        if hints[f.name] is bool:  # a setting on by default gets its --no- form
            group.add_argument(name, action=argparse.BooleanOptionalAction if f.default else "store_true",
                               default=f.default, help=meta["help"] + (" (default on)" if f.default else ""))
            continue
        group.add_argument(name, type=_parser_type(hints[f.name]), default=f.default, choices=meta["choices"],
                           metavar=meta["metavar"], help=help)


def from_args(cls: type, args: argparse.Namespace, **settings: Any):
    """``cls`` from the parsed flags of its fields, plus ``settings`` for the others."""
    return cls(**{f.name: getattr(args, flat_name(f)) for f in flag_fields(cls)}, **settings)

