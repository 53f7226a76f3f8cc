"""Registries of named things contributed by plugins, with the plugin that owns each."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from peftplug.errors import PluginError, RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> item, remembering which plugin registered each item.

    ``check`` validates an item's interface and returns an error message, or None when the item
    is fine; a failing check raises :class:`PluginError` naming the plugin.
    """

    def __init__(self, kind: str, check: Callable[[T], str | None]):
        self.kind = kind
        self._check = check
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, item: T, owner: str) -> None:
        """Register ``item`` under its ``name``; duplicates name both owners."""
        problem = self._check(item)
        if problem:
            raise PluginError(f"plugin {owner!r} registered an invalid {self.kind}: {problem}")
        name = item.name
        if name in self._items:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by plugin {self._owners[name]!r} "
                f"and by plugin {owner!r}; uninstall or disable one of them "
                f"(PEFTPLUG_DISABLE_PLUGINS)"
            )
        self._items[name] = item
        self._owners[name] = owner

    def get(self, name: str) -> T:
        """Return the item called ``name``; an unknown name lists the known ones."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}.{hint}") from None

    def owner(self, name: str) -> str:
        """Return the name of the plugin that registered ``name``."""
        self.get(name)
        return self._owners[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Sorted names of the registered items."""
        return sorted(self._items)
