"""ModulesToSaveLayer on Paddle: a fully trained copy of a layer per adapter (``modules_to_save``)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from paddle import nn

from peftplug.backends.paddle.layer import PaddleAdapterLayer, copy_into, to_numpy


class ModulesToSaveLayer(PaddleAdapterLayer):
    """Keeps ``original_module`` frozen and trains a copy of it per adapter, as HF PEFT's
    ``ModulesToSaveWrapper`` does (same attribute names). Saved keys are the layer's own
    (``score.weight``), in Paddle's layout: a modules-to-save copy is the framework's own layer,
    so its state is the framework's."""

    adapter_layer_names = ("modules_to_save",)

    def __init__(self, module: nn.Layer, adapter_name: str):
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.LayerDict()
        self.add_copy(adapter_name)

    def add_copy(self, adapter_name: str) -> None:
        """Add a trainable copy of the original layer for ``adapter_name``."""
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)

    def set_adapter(self, names: list[str], trainable: bool) -> None:
        """Train the active adapter's copy; the original layer stays frozen."""
        super().set_adapter(names, trainable)
        for parameter in self.original_module.parameters():
            parameter.stop_gradient = True

    def get_base_layer(self) -> nn.Layer:
        """The original, untrained layer."""
        return self.original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The active adapter's copy, or the original layer when adapters are off."""
        if self.disabled or not self.active_adapters:
            return self.original_module(*args, **kwargs)
        return self.modules_to_save[self.active_adapters[0]](*args, **kwargs)

    def merge(self, names: list[str]) -> None:
        """Nothing to fold: the trained copy replaces the layer on unload."""

    def unmerge(self) -> None:
        """Nothing was folded."""

    def unload(self, merge: bool, names: list[str]) -> nn.Layer:
        """The trained copy of the active adapter (HF PEFT returns it on unload too)."""
        chosen = (names or self.active_adapters or [None])[0]
        return self.modules_to_save[chosen] if chosen in self.modules_to_save else self.original_module

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """The copy's state dict (``weight``, ``bias``, ...) as numpy arrays."""
        return {key: to_numpy(value) for key, value in self.modules_to_save[name].state_dict().items()}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Load the copy's tensors; returns the keys taken."""
        own = self.modules_to_save[name].state_dict()
        taken = set(own) & set(tensors)
        for key in sorted(taken):
            copy_into(own[key], tensors[key], key_prefix + key)
        return taken
