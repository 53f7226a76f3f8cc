"""ModulesToSave: a fully trained copy of a module per adapter (``modules_to_save``), framework-free.

Each backend's ``ModulesToSaveLayer`` mixes this class in before its adapter-layer base, and
builds the per-adapter container (``modules_to_save``) and the export / import of a copy's
state, which are the framework's.
"""

from __future__ import annotations

import copy
from typing import Any

from peftplug.errors import AdapterStateError


class ModulesToSave:
    """Keeps ``original_module`` frozen and trains a copy of it per adapter, as HF PEFT's
    ``ModulesToSaveWrapper`` does (same attribute names, so the same parameter names). Saved
    keys are the module's own (``score.weight``), without the wrapper's names."""

    adapter_layer_names = ("modules_to_save",)
    one_active_adapter = True  # forward applies one copy: the tuner refuses several active at once
    auxiliary = True  # HF PEFT's training wrapper, not an adapter layer: no missing keys of its own

    def add_copy(self, adapter_name: str) -> None:
        """Add a trainable copy of the original module for ``adapter_name``."""
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)

    def set_adapter(self, names: list[str], inference_mode: bool = False) -> None:
        """Make one adapter's copy the one applied, trainable unless ``inference_mode``, as HF PEFT's
        ``ModulesToSaveWrapper`` does: the copies active until now are frozen, the others left as
        they are, the original module frozen. Several adapters with copies here are an error."""
        names = [name for name in names if name in self.modules_to_save]
        if len(names) > 1:
            raise AdapterStateError(
                f"modules_to_save: only one adapter's copy can be active at a time, got {names}; "
                "set one of them, or adapters of which one at most has a copy of this module"
            )
        for name in self.active_adapters:
            if name in self.modules_to_save:
                self._set_trainable(self.modules_to_save[name], False)
        if names:
            self._set_trainable(self.modules_to_save[names[0]], not inference_mode)
        self.active_adapters = names
        self._set_trainable(self.original_module, False)
        self._adapters_changed()

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

    def unsafe_merge(self, names: list[str]) -> str | None:
        """None: nothing is folded, so nothing can turn NaN."""
        return None

    def unload(self, merge: bool, names: list[str]) -> Any:
        """The trained copy of the active adapter (HF PEFT returns it on unload too)."""
        chosen = (names or self.active_adapters or [None])[0]
        return self.modules_to_save[chosen] if chosen in self.modules_to_save else self.original_module
