"""TorchAdapterLayer: what every PyTorch adapter layer shares (the core's AdapterLayer protocol).

A method's layer subclasses it, keeps its per-adapter parameters in ``nn.ModuleDict`` /
``nn.ParameterDict`` attributes named in ``adapter_layer_names`` and its per-adapter numbers
in dicts named in ``adapter_value_names``, and writes ``forward``, ``merge``, ``unmerge``,
``export_adapter`` and ``import_adapter``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.tensor_parallel import (
    is_dtensor,
    keep_local_piece,
    local_piece,
    return_parallel_hooks,
)
from peftplug.errors import AdapterShapeError


class TorchAdapterLayer(nn.Module):
    """Bookkeeping shared by PyTorch adapter layers: active, disabled, merged adapters."""

    adapter_layer_names: tuple[str, ...] = ()
    adapter_value_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False
        # True once the layer has taken a tensor-parallel base layer's hooks (its forward then
        # receives DTensors; see peftplug.backends.torch.tensor_parallel).
        self._peftplug_adopted_hooks = False

    @property
    def adapter_names(self) -> list[str]:
        """Every adapter this layer holds, in the order they were added."""
        names: dict[str, None] = {}
        for attribute in self.adapter_layer_names:
            names.update(dict.fromkeys(getattr(self, attribute).keys()))
        return list(names)

    @property
    def merged(self) -> bool:
        """True while some adapter is folded into the base weights."""
        return bool(self.merged_adapters)

    def get_base_layer(self) -> nn.Module:
        """The module this layer wraps."""
        return self.base_layer

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped module's weight: model code reads it through the wrapper (T5's ``self.wo.weight``)."""
        return self.get_base_layer().weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The wrapped module's bias, for the same reason as :attr:`weight`."""
        return getattr(self.get_base_layer(), "bias", None)

    def set_adapter(self, names: list[str], trainable: bool) -> None:
        """Apply ``names`` in forward; only their parameters trainable, and only if ``trainable``."""
        self.active_adapters = list(names)
        for attribute in self.adapter_layer_names:
            for name, holder in getattr(self, attribute).items():
                holder.requires_grad_(trainable and name in names)

    def enable_adapters(self, enabled: bool) -> None:
        """Switch every adapter on or off; switching off undoes any merge first, as HF PEFT does."""
        if not enabled and self.merged:
            self.unmerge()
        self.disabled = not enabled

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` (its parameters and numbers) from this layer."""
        if name in self.merged_adapters:
            raise RuntimeError(f"adapter {name!r} is merged; unmerge it before deleting it")
        for attribute in self.adapter_layer_names + self.adapter_value_names:
            holder = getattr(self, attribute)
            if name in holder:
                del holder[name]
        self.active_adapters = [n for n in self.active_adapters if n != name]

    def unload(self, merge: bool, names: list[str]) -> nn.Module:
        """The base module to put back: with ``names`` merged into it if ``merge``, else restored
        (with the tensor-parallel hooks this layer took from it)."""
        if merge:
            self.merge(names)
        else:
            self.unmerge()
        return_parallel_hooks(self, self.get_base_layer())
        return self.get_base_layer()

    def adapter_tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        """Adapter ``name``'s parameters by saved key suffix, in HF PEFT's layout, where a
        method's layer can be tensor-parallel; None (the default) where it cannot."""
        return None

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's piece of each tensor and its split axis (None: whole); no communication.

        A layer without :meth:`adapter_tensors` holding DTensor parameters is an error naming it.
        """
        tensors = self.adapter_tensors(name)
        if tensors is not None:
            return {suffix: local_piece(tensor, suffix) for suffix, tensor in tensors.items()}
        if any(is_dtensor(parameter) for parameter in self.parameters()):
            raise NotImplementedError(f"{type(self).__name__} cannot save a tensor-parallel (DTensor) module")
        return {suffix: (array, None) for suffix, array in self.export_adapter(name).items()}

    def merge(self, names: list[str]) -> None:
        """Fold ``names`` into the base weights (done by each method's layer)."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge")

    def unmerge(self) -> None:
        """Undo every merge (done by each method's layer)."""
        raise NotImplementedError(f"{type(self).__name__} cannot unmerge")

    def _active_unmerged(self) -> list[str]:
        if self.disabled:
            return []
        return [n for n in self.active_adapters if n not in self.merged_adapters]


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

