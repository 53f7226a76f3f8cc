"""The PyTorch implementation of the core's BackendOps."""

from __future__ import annotations

import sys
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.layer import TorchAdapterLayer, copy_into, to_numpy
from peftplug.backends.torch.model import TorchPeftModel
from peftplug.backends.torch.modules_to_save import ModulesToSaveLayer


def is_conv1d(module: Any) -> bool:
    """True for transformers' GPT-2 style ``Conv1D`` (weight stored ``[in, out]``)."""
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    return pytorch_utils is not None and isinstance(module, pytorch_utils.Conv1D)


class TorchBackend:
    """Walks, replaces, freezes and converts torch modules for the framework-free core."""

    name = "torch"

    def create_peft_model(self, model: nn.Module, method: Any) -> TorchPeftModel:
        """Wrap ``model`` in a :class:`TorchPeftModel`."""
        return TorchPeftModel(model, self, method)

    def is_adapter_layer(self, module: Any) -> bool:
        """True for peftplug's torch adapter layers."""
        return isinstance(module, TorchAdapterLayer)

    def named_modules(self, root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
        """(name, module) in model order, not descending into adapter layers."""
        yield prefix, root
        if isinstance(root, TorchAdapterLayer):
            return
        for child_name, child in root._modules.items():
            if child is not None:
                yield from self.named_modules(child, f"{prefix}.{child_name}" if prefix else child_name)

    def get_module(self, root: nn.Module, name: str) -> nn.Module:
        """The submodule at dotted ``name``."""
        return root.get_submodule(name)

    def replace_module(self, root: nn.Module, name: str, new: nn.Module) -> None:
        """Put ``new`` where ``name`` is; the new module keeps the old one's train/eval mode."""
        parent_name, _, child_name = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        new.train(getattr(parent, child_name).training)
        setattr(parent, child_name, new)

    def named_parameters(self, root: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Every parameter once (shared ones under their first name)."""
        return root.named_parameters()

    def numel(self, parameter: nn.Parameter) -> int:
        """Number of values, as HF PEFT counts them."""
        return parameter.numel()

    def is_trainable(self, parameter: nn.Parameter) -> bool:
        """``requires_grad``."""
        return parameter.requires_grad

    def set_trainable(self, parameter: nn.Parameter, trainable: bool) -> None:
        """Set ``requires_grad``."""
        parameter.requires_grad_(trainable)

    def to_numpy(self, tensor: torch.Tensor) -> np.ndarray:
        """A numpy copy (bfloat16 as float32)."""
        return to_numpy(tensor)

    def copy_into(self, parameter: nn.Parameter, array: np.ndarray, key: str) -> None:
        """Copy with a shape check naming ``key``."""
        copy_into(parameter, array, key)

    def model_type(self, model: nn.Module) -> str | None:
        """``model.config.model_type`` for transformers models, else None."""
        return getattr(getattr(model, "config", None), "model_type", None)

    def is_linear(self, module: Any) -> bool:
        """``nn.Linear`` or transformers' ``Conv1D``."""
        return isinstance(module, nn.Linear) or is_conv1d(module)

    def output_layer_names(self, model: nn.Module) -> list[str]:
        """The name of the output embedding (``lm_head``), which ``all-linear`` leaves out."""
        get_output = getattr(model, "get_output_embeddings", None)
        output = get_output() if callable(get_output) else None
        if output is None:
            return []
        return [name for name, module in model.named_modules() if module is output]

    def wrap_module_to_save(self, module: nn.Module, adapter_name: str) -> ModulesToSaveLayer:
        """A :class:`ModulesToSaveLayer` around ``module``."""
        return ModulesToSaveLayer(module, adapter_name)
