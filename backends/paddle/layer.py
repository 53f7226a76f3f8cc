"""PaddleAdapterLayer: what every Paddle adapter layer shares (the core's AdapterLayer protocol).

A method's layer subclasses it, keeps its per-adapter parameters in ``paddle.nn.ParameterDict``
/ ``paddle.nn.LayerDict`` attributes named in ``adapter_layer_names`` and its per-adapter
numbers in dicts named in ``adapter_value_names``, and writes ``forward``, ``merge``,
``unmerge``, ``export_adapter`` and ``import_adapter``. Whenever the set of adapters a forward
applies changes, :meth:`_adapters_changed` runs, so a layer can precompute what its forward
needs instead of looking it up on every call. The bookkeeping of names is
:class:`peftplug.model.adapter_layer.AdapterLayerBookkeeping`, the same on PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
from paddle import nn

from peftplug.errors import AdapterShapeError
from peftplug.model.adapter_layer import AdapterLayerBookkeeping

# numpy has no bfloat16: such tensors (and float16 ones) leave the backend as float32, exactly.
LOW_PRECISION = (paddle.float16, paddle.bfloat16)


class PaddleAdapterLayer(AdapterLayerBookkeeping, nn.Layer):
    """A Paddle adapter layer: the shared bookkeeping on ``ParameterDict`` / ``LayerDict``
    containers, with parameters frozen through ``stop_gradient``."""

    def _entries(self, container: Any) -> dict[str, Any]:
        """A ``ParameterDict`` / ``LayerDict``'s entries by adapter name."""
        return entries(container)

    def _set_trainable(self, holder: Any, trainable: bool) -> None:
        """``stop_gradient`` of a parameter, or of every parameter of a layer."""
        for parameter in _parameters_of(holder):
            parameter.stop_gradient = not trainable

    def _remove_entry(self, container: Any, name: str) -> None:
        """Drop ``name`` from a ``ParameterDict`` / ``LayerDict`` (or plain dict) if it is there."""
        if isinstance(container, dict):
            container.pop(name, None)
            return
        container._sub_layers.pop(name, None)
        container._parameters.pop(name, None)

    def _take_rows(self, x: paddle.Tensor, rows: list[int]) -> paddle.Tensor:
        """Rows ``rows`` of ``x`` (its first axis), in that order."""
        return paddle.index_select(x, paddle.to_tensor(rows, dtype="int64"), axis=0)

    def _put_rows(self, outputs: list[paddle.Tensor], rows: list[int]) -> paddle.Tensor:
        """``outputs`` stacked on the first axis, row ``j`` of them put back at ``rows[j]``."""
        return paddle.index_select(
            paddle.concat(outputs), paddle.argsort(paddle.to_tensor(rows, dtype="int64")), axis=0
        )

    def _finite(self, module: nn.Layer) -> bool:
        """True when no parameter of ``module`` holds NaN or inf."""
        return all(bool(paddle.isfinite(parameter).all()) for parameter in module.parameters())

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's piece of each tensor and its split axis (None: whole); no communication.

        Layers of fleet's parallel linears override it; any other layer holds its tensors whole,
        and one with a split (``is_distributed``) parameter is an error naming its type.
        """
        if any(getattr(parameter, "is_distributed", False) for parameter in self.parameters()):
            raise NotImplementedError(f"{type(self).__name__} cannot save a tensor-parallel (fleet mp) layer")
        return {suffix: (array, None) for suffix, array in self.export_adapter(name).items()}


def entries(container: nn.Layer | dict) -> dict[str, Any]:
    """The per-adapter entries of a ``ParameterDict`` or ``LayerDict`` (or of a plain dict a
    layer keeps until its first entry), by adapter name."""
    if isinstance(container, dict):
        return container
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
