"""One small registry per extension point (datasets, models, schedules, metrics, ...).

    DATASETS = Registry("dataset")

    @DATASETS.register("fashion-mnist")
    def fashion_mnist(...): ...

    DATASETS.create("fashion-mnist", **kwargs)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from synscale.errors import UserError

T = TypeVar("T")


class UnknownName(UserError, KeyError):
    """A name that is not in a registry; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            return fn

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[tuple[str, T]]:
        """(name, entry) in the order they were registered."""
        return list(self._entries.items())

    def __contains__(self, name: str) -> bool:
        return name in self._entries
