"""Options declared once: a dataclass field carries its help, group, choices and the method argument it
feeds; the command line's flags and the method constructors' arguments are built from it.

    @dataclass
    class Settings:
        lr: float = option(1e-3, "training", "learning rate")

``add_options(parser, Settings)`` then adds ``--lr`` (type float, default 1e-3, in the group
"training"), and ``from_args(Settings, args)`` builds the dataclass from the parsed flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any


def option(default: Any, group: str, help: str, *, choices: Sequence[str] | None = None,
           method_arg: str | None = None, metavar: str | None = None, flag: bool = True) -> Any:
    """A dataclass field with its command-line declaration.

    Args:
        group: the help section of its flag.
        choices: the allowed values, checked by argparse and from Python by :func:`check_choices` (registries
            are checked by the objects).
        method_arg: the name of the method constructors' keyword that receives it (see
            :func:`beyondbp.methods.method_options`); None if it is not a method option.
        flag: False for settings that the command line sets another way (``--method``, ``--seed``).
    """
    meta = {"group": group, "help": help, "choices": choices, "method_arg": method_arg, "metavar": metavar,
            "flag": flag}
    if isinstance(default, (list, dict, set)):
        raise TypeError("give sequences as tuples")
    return dataclasses.field(default=default, metadata=meta)


def check_choices(config: Any) -> None:
    """Every field of ``config`` declared with ``choices`` holds one of them (None where that is its default):
    the Python API's counterpart of argparse's check."""
    from .errors import BeyondBPError

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
        name = "--" + f.name.replace("_", "-")
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
    return cls(**{f.name: getattr(args, f.name) for f in flag_fields(cls)}, **settings)


def method_settings(config: Any) -> dict[str, Any]:
    """The method constructors' keywords with their values in ``config`` (fields with a ``method_arg``)."""
    return {f.metadata["method_arg"]: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.metadata.get("method_arg")}
