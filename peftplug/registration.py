"""What plugins register: backends, methods, formats and architectures.

These are plain descriptions, cheap to build and free of framework imports; the registries in
:mod:`peftplug.registry` check them and the core looks them up by name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

if TYPE_CHECKING:
    from peftplug.config import AdapterConfig
    from peftplug.state import AdapterState


@dataclass(frozen=True)
class Backend:
    """A framework peftplug can run adapters on.

    ``implementation`` is ``"module:attribute"`` of a class implementing
    :class:`peftplug.backend.BackendOps`; it is imported only when a model of this framework is
    used, so registering a backend never imports its framework.
    """

    name: str
    implementation: str
    description: str = ""

    def load(self) -> Any:
        """Import the implementation and return an instance of it."""
        module_name, _, attribute = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        return cls()


@dataclass(frozen=True)
class Method:
    """A PEFT method: its name, its config class, and how it attaches to a model.

    ``kind`` is ``"layer"`` for methods that wrap modules (LoRA, IA3) and ``"prompt"`` for
    methods that prepend virtual tokens (prompt tuning, P-tuning, prefix tuning).
    """

    name: str
    config_class: type[AdapterConfig]
    kind: Literal["layer", "prompt"] = "layer"
    description: str = ""

    @property
    def peft_type(self) -> str:
        """The ``peft_type`` string that adapter_config.json files use for this method."""
        return self.config_class.peft_type


class Format:
    """An on-disk adapter format. Subclass it and register an instance.

    A format turns files into an :class:`~peftplug.state.AdapterState` and back. It never
    writes to disk itself: :meth:`write` returns the files' bytes and the core places them
    atomically, so an interrupted save never leaves a half-written adapter.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def detect(self, directory: Path) -> bool:
        """Return True when ``directory`` holds an adapter in this format."""
        raise NotImplementedError(f"format {self.name!r} does not implement detect()")

    def read(self, directory: Path) -> AdapterState:
        """Read the adapter in ``directory``; raise AdapterLoadError naming what is wrong."""
        raise NotImplementedError(f"format {self.name!r} does not implement read()")

    def write(self, state: AdapterState, *, safe_serialization: bool = True) -> dict[str, bytes]:
        """Return ``{file name: content}`` for ``state``; the caller writes them atomically."""
        raise NotImplementedError(f"format {self.name!r} does not implement write()")


@dataclass(frozen=True)
class Architecture:
    """A model family: the ``model_type`` values it answers to and its default targets.

    ``default_targets`` maps a key to the module names a config takes when it leaves the field
    unset, as HF PEFT's per-family defaults do: the method's name (``"lora"``, ``"ia3"``) for
    ``target_modules``, other keys (``"ia3_feedforward"``) for the fields a config class names
    in ``default_target_fields``.
    """

    name: str
    model_types: tuple[str, ...]
    default_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
