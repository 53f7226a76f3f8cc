"""ModulesToSave: a fully trained copy of a module per adapter (``modules_to_save``), framework-free.

Each backend's ``ModulesToSaveLayer`` mixes this class in before its adapter-layer base, and
builds the per-adapter container (``modules_to_save``) and the export / import of a copy's
state, which are the framework's.
"""

from __future__ import annotations

import copy
from typing import Any


class ModulesToSave:
    """Keeps ``original_module`` frozen and trains a copy of it per adapter, as HF PEFT's
    ``ModulesToSaveWrapper`` does (same attribute names, so the same parameter names). Saved
    keys are the module's own (``score.weight``), without the wrapper's names."""

    adapter_layer_names = ("modules_to_save",)

    def add_copy(self, adapter_name: str) -> None:
        """Add a trainable copy of the original module for ``adapter_name``."""
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)

    def set_adapter(self, names: list[str], trainable: bool) -> None:
        """Train the active adapter's copy; the original module stays frozen."""
        super().set_adapter(names, trainable)
        self._set_trainable(self.original_module, False)

    def get_base_layer(self) -> Any:
        """The original, untrained module."""
        return self.original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The active adapter's copy, or the original module when adapters are off."""
        if self.disabled or not self.active_adapters:
            return self.original_module(*args, **kwargs)
        return self.modules_to_save[self.active_adapters[0]](*args, **kwargs)

    def merge(self, names: list[str]) -> None:
        """Nothing to fold: the trained copy replaces the module on unload."""

    def unmerge(self) -> None:
        """Nothing was folded."""

    def unload(self, merge: bool, names: list[str]) -> Any:
        """The trained copy of the active adapter (HF PEFT returns it on unload too)."""
        chosen = (names or self.active_adapters or [None])[0]
        return self.modules_to_save[chosen] if chosen in self.modules_to_save else self.original_module
