"""TorchAdapterLayer: what every PyTorch adapter layer shares (the core's AdapterLayer protocol).

A method's layer subclasses it, keeps its per-adapter parameters in ``nn.ModuleDict`` /
``nn.ParameterDict`` attributes named in ``adapter_layer_names`` and its per-adapter numbers
in dicts named in ``adapter_value_names``, and writes ``forward``, ``merge``, ``unmerge``,
``export_adapter`` and ``import_adapter``. The bookkeeping of names is
:class:`peftplug.model.adapter_layer.AdapterLayerBookkeeping`, the same on Paddle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.tensor_parallel import (
    is_dtensor,
    is_parallel_module,
    keep_local_piece,
    local_piece,
    return_parallel_hooks,
)
from peftplug.errors import AdapterShapeError
from peftplug.model.adapter_layer import AdapterLayerBookkeeping

# Half-precision dtypes: adapters of such models are kept (and merged) in float32.
LOW_PRECISION = (torch.float16, torch.bfloat16)


class TorchAdapterLayer(AdapterLayerBookkeeping, nn.Module):
    """A PyTorch adapter layer: the shared bookkeeping on ``nn.ModuleDict`` / ``nn.ParameterDict``
    containers, and the tensor-parallel hooks it takes from (and gives back to) its base layer."""

    def __init__(self) -> None:
        super().__init__()
        # True once the layer has taken a tensor-parallel base layer's hooks (its forward then
        # receives DTensors; see peftplug.backends.torch.tensor_parallel).
        self._peftplug_adopted_hooks = False

    def _entries(self, container: Any) -> dict[str, Any]:
        """A ``ModuleDict`` / ``ParameterDict``'s entries by adapter name."""
        return dict(container.items())

    def _set_trainable(self, holder: Any, trainable: bool) -> None:
        """``requires_grad`` of a parameter, or of every parameter of a module."""
        holder.requires_grad_(trainable)

    def _remove_entry(self, container: Any, name: str) -> None:
        """Delete ``name`` from a ``ModuleDict`` / ``ParameterDict`` if it is there."""
        if name in container:
            del container[name]

    def _finite(self, module: nn.Module) -> bool:
        """True when no parameter of ``module`` holds NaN or inf."""
        return all(bool(torch.isfinite(parameter).all()) for parameter in module.parameters())

    def unload(self, merge: bool, names: list[str]) -> nn.Module:
        """The base module to put back: with ``names`` merged into it if ``merge``, else restored
        (with the tensor-parallel hooks this layer took from it)."""
        base = super().unload(merge, names)
        return_parallel_hooks(self, base)
        return base

    def _take_rows(self, x: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """Rows ``rows`` of ``x`` (its first axis), in that order."""
        return x[torch.tensor(rows, device=x.device)]

    def _put_rows(self, outputs: list[torch.Tensor], rows: list[int]) -> torch.Tensor:
        """``outputs`` stacked on the first axis, row ``j`` of them put back at ``rows[j]``."""
        return torch.cat(outputs)[torch.argsort(torch.tensor(rows, device=outputs[0].device))]

    def is_tensor_parallel(self) -> bool:
        """True when this layer took a tensor-parallel base layer's hooks: its adapter tensors are
        then DTensors split like the base weight. (A base sharded by ``fully_shard`` is not tensor
        parallel: FSDP2 gathers it whole around the forward, and the adapter is kept whole.)"""
        return self._peftplug_adopted_hooks

    def adapter_tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        """Adapter ``name``'s parameters by saved key suffix, in HF PEFT's layout, where a
        method's layer can be tensor-parallel; None (the default) where it cannot."""
        return None

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's piece of each tensor and its split axis (None: whole); no communication.

        A layer without :meth:`adapter_tensors` around a tensor-parallel module is an error naming
        it; under ``fully_shard`` such a layer's tensors are gathered whole (a collective).
        """
        tensors = self.adapter_tensors(name)
        if tensors is not None:
            return {suffix: local_piece(tensor, suffix) for suffix, tensor in tensors.items()}
        if any(is_parallel_module(module) for module in self.modules()):
            raise NotImplementedError(f"{type(self).__name__} cannot save a tensor-parallel (DTensor) module")
        return {suffix: (array, None) for suffix, array in self.export_adapter(name).items()}


def adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    """Adapters of half-precision models train in float32, as HF PEFT's autocast does, and so do
    those of quantized ones (an integer-stored weight)."""
    if weight.dtype in LOW_PRECISION or not weight.dtype.is_floating_point:
        return torch.float32
    return weight.dtype


def linear_features(base_layer: nn.Module, fan_in_fan_out: bool) -> tuple[int, int]:
    """``(in, out)`` of a Linear (its own counts: a packed 4-bit weight's shape is not them) or
    of a Conv1D (its ``[in, out]`` weight)."""
    if fan_in_fan_out:
        return tuple(base_layer.weight.shape)
    return base_layer.in_features, base_layer.out_features


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy of ``tensor``; bfloat16 (which numpy lacks) becomes float32, exactly.

    A DTensor is gathered whole first: a collective, which every rank must call.
    """
    tensor = tensor.detach()
    if is_dtensor(tensor):
        tensor = tensor.full_tensor()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.cpu().numpy().copy()


def copy_into(parameter: Any, array: np.ndarray, key: str) -> None:
    """Copy ``array`` into ``parameter``; a shape mismatch names ``key`` and both shapes.

    A DTensor parameter takes the whole tensor and keeps this rank's piece.
    """
    if tuple(parameter.shape) != tuple(array.shape):
        raise AdapterShapeError(key, tuple(array.shape), tuple(parameter.shape))
    if is_dtensor(parameter):
        keep_local_piece(parameter, array)
        return
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(np.ascontiguousarray(array)))
