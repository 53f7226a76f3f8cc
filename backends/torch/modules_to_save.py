"""ModulesToSaveLayer: a fully trained copy of a module per adapter (``modules_to_save``)."""

from __future__ import annotations

import numpy as np
from torch import nn

from peftplug.backends.torch.layer import TorchAdapterLayer, copy_into, to_numpy
from peftplug.model.modules_to_save import ModulesToSave


class ModulesToSaveLayer(ModulesToSave, TorchAdapterLayer):
    """``modules_to_save`` on PyTorch: the copies live in an ``nn.ModuleDict``."""

    def __init__(self, module: nn.Module, adapter_name: str):
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.ModuleDict()
        self.add_copy(adapter_name)

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """The copy's state dict (``weight``, ``bias``, ...) as numpy arrays."""
        return {key: to_numpy(value) for key, value in self.modules_to_save[name].state_dict().items()}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Load the copy's tensors; returns the keys taken."""
        own = self.modules_to_save[name].state_dict(keep_vars=True)
        taken = set(own) & set(tensors)
        for key in sorted(taken):
            copy_into(own[key], tensors[key], key_prefix + key)
        return taken
