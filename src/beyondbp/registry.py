"""Name -> constructor registries, so that strings on the command line map to objects.

An unknown name raises :class:`UnknownNameError` listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to constructors, with one-line help per entry."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[T, str]] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = (obj, help)
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name][0]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def help(self, name: str) -> str:
        self.get(name)
        return self._entries[name][1]

    def __contains__(self, name: str) -> bool:
        return name in self._entries
