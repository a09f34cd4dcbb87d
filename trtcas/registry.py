"""Explicit registries filled from Python entry points, so a plugin package can add a rule,
planner, backend, architecture, scheduler or remote without editing trtcas.

Each registry is an object owned by the module that uses it (no import side effects fill it).
Its entries come from, in order: ``builtin`` (given in code), the entry point group of the
installed distributions (trtcas's own built-ins are declared there too, in pyproject.toml),
and ``register`` calls (tests register their doubles this way). An entry point is loaded
only when its name is first asked for, so keying a cached action imports no TensorRT code.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from trtcas.errors import TrtcasError

T = TypeVar("T")


class UnknownEntry(TrtcasError):
    """A name nothing registered; the message lists the known names."""


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None, builtin: Mapping[str, T] | None = None):
        self.kind = kind
        self.group = entry_point_group
        self._items: dict[str, T] = dict(builtin or {})
        self._loaders: dict[str, Callable[[], T]] | None = None
        self._lock = threading.RLock()

    def _entry_points(self) -> dict[str, Callable[[], T]]:
        with self._lock:
            if self._loaders is None:
                from importlib import metadata  # ~20 ms: only once a registry is asked

                found = metadata.entry_points(group=self.group) if self.group else ()
                self._loaders = {ep.name: ep.load for ep in found}
            return self._loaders

    def register(self, name: str, item: T) -> T:
        with self._lock:
            self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        with self._lock:
            self._items.pop(name, None)
            self._entry_points().pop(name, None)

    def get(self, name: str) -> T:
        with self._lock:
            if name in self._items:
                return self._items[name]
            loader = self._entry_points().get(name)
            if loader is None:
                raise UnknownEntry(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})")
            item = self._items[name] = loader()
            return item

    def names(self) -> list[str]:
        with self._lock:
            return sorted(set(self._items) | set(self._entry_points()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def all(self) -> dict[str, T]:
        """Every entry, loaded (imports every plugin: for listings, not for keying)."""
        return {name: self.get(name) for name in self.names()}
