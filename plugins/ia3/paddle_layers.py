"""(IA)³ layers for PaddlePaddle: ``paddle.nn.Linear`` (fleet's tensor-parallel linears:
:mod:`~peftplug.plugins.ia3.paddle_parallel_layers`).

Paddle stores a Linear weight ``W`` as ``[in, out]`` (``y = x W + b``). Each learned vector
``l`` (ones at init) is kept as a row ``[1, features]`` that broadcasts over the last axis::

    feed-forward module:  y = (x * l) W + b        l: [1, in]   scales the input
    other module:         y = (x W + b) * l        l: [1, out]  scales the output
    merge:    feed-forward  W <- diag(l) W         (W's rows, Paddle's layout)
              other         W <- W diag(l),  b <- l * b   (W's columns and the bias)
    unmerge:  divide by l + 1e-8 instead: inexact (rounding; a zero in l cannot be undone)

At the edge the vectors are HF PEFT's ``ia3_l``: ``[1, in]`` for a feed-forward module (as
stored) and ``[out, 1]`` for the others (the transpose of what is stored).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from peftplug.backends.paddle.layer import (
    PaddleAdapterLayer,
    adapter_dtype,
    copy_into,
    copy_transposed_into,
    to_numpy,
)
from peftplug.backends.paddle.tensor_parallel import is_parallel_linear
from peftplug.plugins.ia3.config import IA3Config
from peftplug.plugins.ia3.merging import UNMERGE_EPSILON, InexactUnmerge


class IA3Linear(InexactUnmerge, PaddleAdapterLayer):
    """(IA)³ around ``paddle.nn.Linear``; parameters ``ia3_l.<adapter>``.

    Whether a vector scales the input (feed-forward) or the output is decided per adapter, from
    its config, and recorded in ``is_feedforward``.
    """

    adapter_layer_names = ("ia3_l",)
    adapter_value_names = ("is_feedforward",)

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.weight.shape
        self.ia3_l = nn.ParameterDict()
        self.is_feedforward: dict[str, bool] = {}
        # What forward applies, precomputed by _adapters_changed: input and output vectors.
        self._inputs: tuple[Any, ...] = ()
        self._outputs: tuple[Any, ...] = ()
        self._plain_base = type(base_layer) is nn.Linear

    def update_layer(self, adapter_name: str, config: IA3Config, module_name: str) -> None:
        """Add adapter ``adapter_name``: a ``[1, in]`` row for a feed-forward module, else ``[1, out]``."""
        feedforward = config.is_feedforward(module_name)
        width = self.in_features if feedforward else self.out_features
        init = nn.initializer.Constant(1.0) if config.init_ia3_weights else nn.initializer.Normal()
        self.ia3_l[adapter_name] = self.create_parameter(
            [1, width], dtype=adapter_dtype(self.base_layer.weight), is_bias=False, default_initializer=init
        )
        self.is_feedforward[adapter_name] = feedforward
        self._adapters_changed()

    def _adapters_changed(self) -> None:
        active = self._active_unmerged()
        self._inputs = tuple(self.ia3_l[n] for n in active if self.is_feedforward[n])
        self._outputs = tuple(self.ia3_l[n] for n in active if not self.is_feedforward[n])

    def _weight_scale(self, name: str) -> paddle.Tensor:
        """``l`` shaped to multiply ``W`` (``[in, out]``): a column for inputs, a row for outputs."""
        vector = self.ia3_l[name].astype(self.base_layer.weight.dtype)
        return vector.T if self.is_feedforward[name] else vector

    def _merge_one(self, name: str) -> None:
        """Scale ``W`` (and, for output scaling, ``b``) by ``l``."""
        base = self.base_layer
        with paddle.no_grad():
            scale = self._weight_scale(name)
            base.weight.set_value(base.weight * scale)
            if not self.is_feedforward[name] and base.bias is not None:
                base.bias.set_value(base.bias * scale.reshape(base.bias.shape))

    def _unmerge_one(self, name: str) -> None:
        """Divide ``l`` back out of ``W`` (and ``b``)."""
        base = self.base_layer
        with paddle.no_grad():
            scale = self._weight_scale(name) + UNMERGE_EPSILON
            base.weight.set_value(base.weight / scale)
            if not self.is_feedforward[name] and base.bias is not None:
                base.bias.set_value(base.bias / scale.reshape(base.bias.shape))

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """``(x * l) W + b`` for feed-forward adapters, ``(x W + b) * l`` for the others
        (each active, unmerged adapter)."""
        for vector in self._inputs:
            x = x * vector if x.dtype == vector.dtype else (x.astype(vector.dtype) * vector).astype(x.dtype)
        base = self.base_layer
        result = F.linear(x, base.weight, base.bias) if self._plain_base else base(x, *args, **kwargs)
        for vector in self._outputs:
            if result.dtype == vector.dtype:
                result = result * vector
            else:
                result = (result.astype(vector.dtype) * vector).astype(result.dtype)
        return result

    def mixed_batch_forward(self, row_adapters: list[str], x: paddle.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Each row scaled by its own adapter's vector, gathered once for the batch (ones on rows
        of the base or of an adapter scaling the other side): ``(x_i * l_i) W + b`` for
        feed-forward adapters, ``(x_i W + b) * l_i`` for the others."""
        groups = self._rows_by_adapter(row_adapters, x.shape[0])
        names = [name for name in groups if name != "__base__"]
        if len(groups) == 1:
            return super().mixed_batch_forward(row_adapters, x, *args, **kwargs)
        scaled_in = [name for name in names if self.is_feedforward[name]]
        if scaled_in:
            vectors = self._row_vectors(row_adapters, scaled_in)
            x = (
                (x.reshape([x.shape[0], -1, x.shape[-1]]).astype(vectors.dtype) * vectors)
                .reshape(x.shape)
                .astype(x.dtype)
            )
        base = self.base_layer
        result = F.linear(x, base.weight, base.bias) if self._plain_base else base(x, *args, **kwargs)
        scaled_out = [name for name in names if not self.is_feedforward[name]]
        if scaled_out:
            vectors = self._row_vectors(row_adapters, scaled_out)
            rows = result.reshape([result.shape[0], -1, result.shape[-1]]).astype(vectors.dtype)
            result = (rows * vectors).reshape(result.shape).astype(result.dtype)
        return result

    def _row_vectors(self, row_adapters: list[str], names: list[str]) -> paddle.Tensor:
        """``[rows, 1, features]``: each row's adapter's vector among ``names``, ones elsewhere."""
        vectors = [self.ia3_l[name].flatten() for name in names]
        stack = paddle.stack(vectors + [paddle.ones_like(vectors[0])])
        slots = {name: slot for slot, name in enumerate(names)}
        index = paddle.to_tensor([slots.get(name, len(names)) for name in row_adapters], dtype="int64")
        return paddle.index_select(stack, index, axis=0).unsqueeze(1)

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``ia3_l``: ``[1, in]`` for a feed-forward module, ``[out, 1]`` otherwise (HF PEFT's)."""
        vector = to_numpy(self.ia3_l[name])
        return {"ia3_l": vector if self.is_feedforward[name] else np.ascontiguousarray(vector.T)}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``ia3_l`` (HF PEFT's layout) in, checking its shape (a feed-forward mismatch
        shows as one)."""
        if "ia3_l" not in tensors:
            return set()
        copy = copy_into if self.is_feedforward[name] else copy_transposed_into
        copy(self.ia3_l[name], tensors["ia3_l"], key_prefix + "ia3_l")
        return {"ia3_l"}


def wrap(layer: nn.Layer, name: str, config: IA3Config, adapter_name: str) -> nn.Layer | None:
    """The IA3 layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported."""
    if isinstance(layer, IA3Linear):
        ia3 = layer
    elif isinstance(layer, nn.Linear):
        ia3 = IA3Linear(layer)
    elif is_parallel_linear(layer):
        from peftplug.plugins.ia3.paddle_parallel_layers import wrap_parallel

        ia3 = wrap_parallel(layer)
    else:
        return None
    ia3.update_layer(adapter_name, config, name)
    return ia3
