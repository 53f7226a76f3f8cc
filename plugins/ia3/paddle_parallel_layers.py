"""(IA)³ around fleet's tensor-parallel linears: each vector follows the axis it scales.

Paddle keeps every vector as a row ``[1, features]``:

- column-parallel (``W`` ``[in, out/tp]``): an input vector ``[1, in]`` is whole, an output
  vector ``[1, out/tp]`` split on axis 1;
- row-parallel (``W`` ``[in/tp, out]``): an input vector ``[1, in/tp]`` split on axis 1, an
  output vector ``[1, out]`` whole.

At the edge they are HF PEFT's ``ia3_l`` (``[1, in]`` as stored, ``[out, 1]`` transposed), so a
split output vector is split on axis 0 there. As for LoRA (see
:mod:`~peftplug.plugins.lora.paddle_parallel_layers`): ``export_adapter`` gathers,
``import_adapter`` keeps this rank's piece of a whole tensor, a new vector is made equal on
every rank, merging works on the local pieces, and forward (fleet's mp ops) needs a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from peftplug.backends.paddle.layer import copy_into, to_numpy
from peftplug.backends.paddle.tensor_parallel import Shards, is_column_parallel
from peftplug.errors import AdapterShapeError
from peftplug.plugins.ia3.config import IA3Config
from peftplug.plugins.ia3.paddle_layers import IA3Linear


class _ParallelIA3Linear(IA3Linear):
    """What column- and row-parallel IA3 share; ``split_inputs`` says whether the input vector
    (row-parallel) or the output vector (column-parallel) is the split one."""

    split_inputs = False

    def __init__(self, base_layer: nn.Layer):
        super().__init__(base_layer)
        self.shards = Shards(base_layer)
        local_in, local_out = base_layer.weight.shape
        degree = self.shards.degree
        self.in_features = local_in * degree if self.split_inputs else local_in
        self.out_features = local_out if self.split_inputs else local_out * degree

    def _is_split(self, name: str) -> bool:
        return self.is_feedforward[name] == self.split_inputs

    def update_layer(self, adapter_name: str, config: IA3Config, module_name: str) -> None:
        """Add adapter ``adapter_name``: the whole vector, made equal on every rank, then cut."""
        super().update_layer(adapter_name, config, module_name)
        whole = self.shards.broadcast(self.ia3_l[adapter_name].detach())
        self.ia3_l[adapter_name] = self.shards.parameter(self, whole, 1 if self._is_split(adapter_name) else None)
        self._adapters_changed()

    def _to_hf(self, name: str, row: np.ndarray) -> np.ndarray:
        return row if self.is_feedforward[name] else np.ascontiguousarray(row.T)

    def _hf_axis(self, name: str) -> int | None:
        if not self._is_split(name):
            return None
        return 1 if self.is_feedforward[name] else 0

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """The whole ``ia3_l`` in HF PEFT's layout (gathers: every rank must call it)."""
        return {"ia3_l": self._to_hf(name, self.shards.gather(self.ia3_l[name], 1 if self._is_split(name) else None))}

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's piece of ``ia3_l`` in HF PEFT's layout, and its split axis there."""
        return {"ia3_l": (self._to_hf(name, to_numpy(self.ia3_l[name])), self._hf_axis(name))}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy the whole ``ia3_l`` (HF PEFT's layout) in, keeping this rank's piece."""
        if "ia3_l" not in tensors:
            return set()
        array, key = tensors["ia3_l"], key_prefix + "ia3_l"
        expected = (1, self.in_features) if self.is_feedforward[name] else (self.out_features, 1)
        if tuple(array.shape) != expected:
            raise AdapterShapeError(key, tuple(array.shape), expected)
        row = array if self.is_feedforward[name] else array.T
        copy_into(self.ia3_l[name], self.shards.piece(row, 1 if self._is_split(name) else None), key)
        return {"ia3_l"}

    def _scale_input(self, x: paddle.Tensor) -> paddle.Tensor:
        for vector in self._inputs:
            x = (x.astype(vector.dtype) * vector).astype(x.dtype)
        return x

    def _scale_output(self, result: paddle.Tensor) -> paddle.Tensor:
        for vector in self._outputs:
            result = (result.astype(vector.dtype) * vector).astype(result.dtype)
        return result


class ColumnParallelIA3Linear(_ParallelIA3Linear):
    """IA3 around ``ColumnParallelLinear``: input vectors whole, output vectors ``[1, out/tp]``."""

    split_inputs = False

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """``((x l_in) W_r + b_r) l_out,r`` on this rank's columns, concatenated over the group
        when the base layer gathers its output."""
        from paddle.distributed.fleet.layers.mpu import mp_ops

        base, group = self.base_layer, self.shards.group
        x = self._scale_input(x)
        input_mp = mp_ops._c_identity(x, group=group) if group is not None else x
        result = self._scale_output(F.linear(input_mp, base.weight, base.bias))
        if base.gather_output and group is not None:
            result = mp_ops._c_concat(result, group=group)
        return result


class RowParallelIA3Linear(_ParallelIA3Linear):
    """IA3 around ``RowParallelLinear``: input vectors ``[1, in/tp]``, output vectors whole."""

    split_inputs = True

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """``(allreduce((x_r l_in,r) W_r) + b) l_out``, ``x_r`` this rank's input columns."""
        from paddle.distributed.fleet.layers.mpu import mp_ops

        base, group = self.base_layer, self.shards.group
        if group is not None and not base.input_is_parallel:
            x = mp_ops._c_split(x, group=group)
        result = F.linear(self._scale_input(x), base.weight)
        if group is not None:
            result = mp_ops._mp_allreduce(result, group=group, use_calc_stream=True, use_model_parallel=True)
        if base.bias is not None:
            result = result + base.bias
        return self._scale_output(result)


def wrap_parallel(layer: nn.Layer) -> _ParallelIA3Linear:
    """The IA3 layer for a fleet column- or row-parallel linear (no adapter added yet)."""
    return ColumnParallelIA3Linear(layer) if is_column_parallel(layer) else RowParallelIA3Linear(layer)
