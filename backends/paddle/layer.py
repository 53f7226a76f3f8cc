"""PaddleAdapterLayer: what every Paddle adapter layer shares (the core's AdapterLayer protocol).

A method's layer subclasses it, keeps its per-adapter parameters in ``paddle.nn.ParameterDict``
/ ``paddle.nn.LayerDict`` attributes named in ``adapter_layer_names`` and its per-adapter
numbers in dicts named in ``adapter_value_names``, and writes ``forward``, ``merge``,
``unmerge``, ``export_adapter`` and ``import_adapter``. Whenever the set of adapters a forward
applies changes, :meth:`_adapters_changed` runs, so a layer can precompute what its forward
needs instead of looking it up on every call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
from paddle import nn

from peftplug.errors import AdapterShapeError

# numpy has no bfloat16: such tensors (and float16 ones) leave the backend as float32, exactly.
LOW_PRECISION = (paddle.float16, paddle.bfloat16)


class PaddleAdapterLayer(nn.Layer):
    """Bookkeeping shared by Paddle adapter layers: active, disabled, merged adapters."""

    adapter_layer_names: tuple[str, ...] = ()
    adapter_value_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False

    @property
    def adapter_names(self) -> list[str]:
        """Every adapter this layer holds, in the order they were added."""
        names: dict[str, None] = {}
        for attribute in self.adapter_layer_names:
            names.update(dict.fromkeys(entries(getattr(self, attribute))))
        return list(names)

    @property
    def merged(self) -> bool:
        """True while some adapter is folded into the base weights."""
        return bool(self.merged_adapters)

    def get_base_layer(self) -> nn.Layer:
        """The layer this one wraps."""
        return self.base_layer

    @property
    def weight(self) -> paddle.Tensor:
        """The wrapped layer's weight: model code may read it through the wrapper."""
        return self.get_base_layer().weight

    @property
    def bias(self) -> paddle.Tensor | None:
        """The wrapped layer's bias, for the same reason as :attr:`weight`."""
        return getattr(self.get_base_layer(), "bias", None)

    def set_adapter(self, names: list[str], trainable: bool) -> None:
        """Apply ``names`` in forward; only their parameters trainable, and only if ``trainable``."""
        self.active_adapters = list(names)
        for attribute in self.adapter_layer_names:
            for name, holder in entries(getattr(self, attribute)).items():
                for parameter in _parameters_of(holder):
                    parameter.stop_gradient = not (trainable and name in names)
        self._adapters_changed()

    def enable_adapters(self, enabled: bool) -> None:
        """Switch every adapter on or off; switching off undoes any merge first, as HF PEFT does."""
        if not enabled and self.merged:
            self.unmerge()
        self.disabled = not enabled
        self._adapters_changed()

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` (its parameters and numbers) from this layer."""
        if name in self.merged_adapters:
            raise RuntimeError(f"adapter {name!r} is merged; unmerge it before deleting it")
        for attribute in self.adapter_layer_names:
            holder = getattr(self, attribute)
            holder._sub_layers.pop(name, None)
            holder._parameters.pop(name, None)
        for attribute in self.adapter_value_names:
            getattr(self, attribute).pop(name, None)
        self.active_adapters = [n for n in self.active_adapters if n != name]
        self._adapters_changed()

    def unload(self, merge: bool, names: list[str]) -> nn.Layer:
        """The base layer to put back: with ``names`` merged into it if ``merge``, else restored."""
        if merge:
            self.merge(names)
        else:
            self.unmerge()
        return self.get_base_layer()

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's piece of each tensor and its split axis (None: whole); no communication.

        Layers of fleet's parallel linears override it; any other layer holds its tensors whole,
        and one with a split (``is_distributed``) parameter is an error naming its type.
        """
        if any(getattr(parameter, "is_distributed", False) for parameter in self.parameters()):
            raise NotImplementedError(f"{type(self).__name__} cannot save a tensor-parallel (fleet mp) layer")
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

    def _adapters_changed(self) -> None:
        """Called after any change of the adapters a forward applies (override to precompute)."""


def entries(container: nn.Layer) -> dict[str, Any]:
    """The per-adapter entries of a ``ParameterDict`` or ``LayerDict``, by adapter name."""
    return {**container._parameters, **container._sub_layers}


def _parameters_of(holder: Any) -> list[Any]:
    if isinstance(holder, nn.Layer):
        return list(holder.parameters())
    return [holder]


def adapter_dtype(weight: paddle.Tensor) -> Any:
    """Adapters of half-precision models are kept in float32 (HF PEFT's autocast does the same)."""
    return paddle.float32 if weight.dtype in LOW_PRECISION else weight.dtype


def to_numpy(tensor: paddle.Tensor) -> np.ndarray:
    """A numpy copy of ``tensor``; bfloat16 and float16 become float32, exactly."""
    tensor = tensor.detach()
    if tensor.dtype in LOW_PRECISION:
        tensor = tensor.astype(paddle.float32)
    return np.array(tensor.numpy(), copy=True)


def copy_into(parameter: paddle.Tensor, array: np.ndarray, key: str) -> None:
    """Copy ``array`` (same layout as ``parameter``) into ``parameter``, converting its dtype;
    a shape mismatch names ``key`` and both shapes."""
    if tuple(parameter.shape) != tuple(array.shape):
        raise AdapterShapeError(key, tuple(array.shape), tuple(parameter.shape))
    value = paddle.to_tensor(np.ascontiguousarray(array))
    if value.dtype != parameter.dtype:
        value = value.astype(parameter.dtype)
    with paddle.no_grad():
        parameter.set_value(value)


def copy_transposed_into(parameter: paddle.Tensor, array: np.ndarray, key: str) -> None:
    """Copy a tensor saved in HF PEFT's layout (``[out, in]``-style, the transpose of Paddle's)
    into ``parameter``; a shape mismatch names ``key`` and both shapes in HF PEFT's layout."""
    expected = tuple(parameter.shape)[::-1]
    if tuple(array.shape) != expected:
        raise AdapterShapeError(key, tuple(array.shape), expected)
    copy_into(parameter, np.ascontiguousarray(array.T), key)
