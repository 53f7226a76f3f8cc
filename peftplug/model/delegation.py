"""Attribute delegation for the wrappers around the user's model, written once for every
backend: a peftplug model answers ``config``, ``generate``, ``device`` ... as the user's model
does, through HF PEFT's tree ``PeftModel.base_model`` (:class:`~peftplug.model.tuner.TunerModelBase`) ``.model``."""

from __future__ import annotations

from typing import Any, ClassVar


class DelegatesToInner:
    """Mixed before a framework's module class: an attribute the module does not have is looked
    up on ``getattr(self, _inner)``. Names in ``_own`` (the inner module itself and the framework's
    containers) are never delegated, so a half-built module raises ``AttributeError`` for them
    instead of recursing."""

    _inner: ClassVar[str]
    # torch's and Paddle's containers of submodules, parameters and buffers
    _own: ClassVar[frozenset[str]] = frozenset({"_modules", "_parameters", "_buffers", "_sub_layers"})

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if name == self._inner or name in self._own:
                raise
            found = self._declared_attribute(name)
            return found if found is not None else getattr(getattr(self, self._inner), name)

    def _declared_attribute(self, name: str) -> Any:
        """An attribute a plugin declares for this object, looked up before the inner one's; None."""
        return None
