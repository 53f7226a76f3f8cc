"""Public classes that stand for one class per framework: ``LoRAModel(model, config)`` builds the
class of the model's backend, so a script switches framework by changing its model line.

A class made with :class:`DispatchesOnBackend` declares ``implementations``,
``{backend name: "module:attribute"}``; calling it (or a classmethod it forwards with
:func:`forward_to_backend`) imports the implementation of the backend that claims the model, and
``isinstance`` holds for instances of every implementation already imported.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from peftplug.errors import BackendError
from peftplug.manager import get_plugin_manager
from peftplug.registration import load_declared


class DispatchesOnBackend(type):
    """The metaclass of a class whose instances are its backends' implementations."""

    implementations: Mapping[str, str]

    def implementation_for(cls, model: Any) -> type:
        """The implementation for the backend that claims ``model``, imported now; an error
        naming the backend when the class has none for it."""
        backend = get_plugin_manager().detect_backend(model)
        spec = cls.implementations.get(backend)
        if spec is None:
            known = ", ".join(sorted(cls.implementations)) or "none"
            raise BackendError(f"{cls.__name__} is not available for {backend} models; it is for: {known}")
        return load_declared(spec, cls.__name__)

    def __call__(cls, model: Any, *args: Any, **kwargs: Any) -> Any:
        """An instance of the implementation for ``model``'s backend."""
        return cls.implementation_for(model)(model, *args, **kwargs)

    def imported_implementations(cls) -> list[type]:
        """The implementations already imported (one never imported has no instance yet)."""
        found = []
        for spec in cls.implementations.values():
            module_name, _, attribute = spec.partition(":")
            implementation = getattr(sys.modules.get(module_name), attribute, None)
            if isinstance(implementation, type):
                found.append(implementation)
        return found

    def __instancecheck__(cls, instance: Any) -> bool:
        return any(isinstance(instance, implementation) for implementation in cls.imported_implementations())

    def __subclasscheck__(cls, subclass: type) -> bool:
        return any(issubclass(subclass, implementation) for implementation in cls.imported_implementations())


def forward_to_backend(name: str) -> classmethod:
    """A classmethod ``name(model, ...)`` that calls the same classmethod of the implementation
    for ``model``'s backend (``LoRAModel.from_pretrained(model, path)``)."""

    def forwarded(cls: DispatchesOnBackend, model: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(cls.implementation_for(model), name)(model, *args, **kwargs)

    forwarded.__name__ = name
    forwarded.__doc__ = f"``{name}`` of the class for ``model``'s framework."
    return classmethod(forwarded)
