"""ModulesToSaveLayer on Paddle: a fully trained copy of a layer per adapter (``modules_to_save``)."""

from __future__ import annotations

import numpy as np
from paddle import nn

from peftplug.backends.paddle.layer import PaddleAdapterLayer, copy_into, to_numpy
from peftplug.model.modules_to_save import ModulesToSave


class ModulesToSaveLayer(ModulesToSave, PaddleAdapterLayer):
    """``modules_to_save`` on Paddle: the copies live in an ``nn.LayerDict``; saved keys are in
    Paddle's layout, since a copy is the framework's own layer and so is its state."""

    def __init__(self, module: nn.Layer, adapter_name: str):
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.LayerDict()
        self.add_copy(adapter_name)

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
