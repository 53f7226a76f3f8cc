"""Attribute delegation for the wrappers around the user's model, written once for every
backend: a peftplug model answers ``config``, ``generate``, ``device`` ... as the user's model
does, through HF PEFT's tree ``PeftModel.base_model`` (:class:`TunerModelBase`) ``.model``."""

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
            return getattr(getattr(self, self._inner), name)


class TunerModelBase(DelegatesToInner):
    """Holds the user's model as ``.model`` (HF PEFT's ``LoraModel`` position in the tree);
    mixed with the framework's module class by each backend."""

    _inner = "model"

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the user's model."""
        return self.model(*args, **kwargs)
