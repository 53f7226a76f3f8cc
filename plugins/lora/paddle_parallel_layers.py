"""LoRA around fleet's tensor-parallel linears, sharded as PaddleNLP shards them.

PaddleNLP's ``ColumnParallelLoRALinear`` / ``RowParallelLoRALinear`` (paddlenlp.peft.lora), in
Paddle's layout (``W`` ``[in, out]``, A ``[in, r]``, B ``[r, out]``):

- column-parallel (``W`` ``[in, out/tp]``): A whole, B ``[r, out/tp]`` split on axis 1;
- row-parallel (``W`` ``[in/tp, out]``): A ``[in/tp, r]`` split on axis 0, B whole.

At the edge the tensors are HF PEFT's (``lora_A.weight`` ``[r, in]``, ``lora_B.weight``
``[out, r]``), so the split axes flip: column-parallel splits ``lora_B.weight`` on axis 0,
row-parallel ``lora_A.weight`` on axis 1. ``export_adapter`` gathers (a collective: every rank
calls it), ``import_adapter`` takes whole tensors and keeps this rank's piece, and
``export_adapter_shard`` gives the local pieces. A new adapter is initialised whole, as on one
process, broadcast from the group's first rank, then cut. Merging works on the local pieces
(``A B`` of the pieces is this rank's piece of ``A B``).

Forward is PaddleNLP's (its plain path, without MC2 or quick LoRA); its mp ops (``c_identity``,
``c_concat``, ``mp_allreduce``) have no CPU kernel, so it runs on GPUs only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from peftplug.backends.paddle.layer import copy_transposed_into, to_numpy
from peftplug.backends.paddle.tensor_parallel import Shards, is_column_parallel
from peftplug.errors import AdapterShapeError, PeftplugError
from peftplug.plugins.lora.config import LoraConfig, uses_base_weight
from peftplug.plugins.lora.paddle_layers import LoraLinear

SUFFIXES = {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight"}


class _ParallelLoraLinear(LoraLinear):
    """What column- and row-parallel LoRA share; ``split`` says which matrix is cut on which
    Paddle axis (``{"lora_B": 1}`` column-parallel, ``{"lora_A": 0}`` row-parallel)."""

    split: dict[str, int] = {}

    def __init__(self, base_layer: nn.Layer):
        super().__init__(base_layer)
        self.shards = Shards(base_layer)
        self.in_features, self.out_features = self._global_features(*base_layer.weight.shape)

    def _global_features(self, local_in: int, local_out: int) -> tuple[int, int]:
        raise NotImplementedError

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name``: initialised whole (as on one process), made equal on
        every rank, then cut to this rank's piece."""
        if config.use_dora:
            raise PeftplugError(
                f"DoRA (use_dora=True) on {module_name}: a tensor-parallel layer is not supported, as its "
                "column norms would need the whole weight"
            )
        if uses_base_weight(config.init_lora_weights):
            raise PeftplugError(
                f"init_lora_weights={config.init_lora_weights!r} on {module_name}: a tensor-parallel layer is not "
                "supported, as PiSSA and OLoRA factorise the whole weight; initialise before sharding"
            )
        super().update_layer(adapter_name, config, module_name)
        for attribute in SUFFIXES:
            holder = getattr(self, attribute)
            whole = self.shards.broadcast(holder[adapter_name].detach())
            holder[adapter_name] = self.shards.parameter(self, whole, self.split.get(attribute))
        self._adapters_changed()

    def _hf_axis(self, attribute: str) -> int | None:
        """The split axis in HF PEFT's (transposed) layout."""
        axis = self.split.get(attribute)
        return None if axis is None else 1 - axis

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """The whole ``lora_A.weight`` / ``lora_B.weight`` in HF PEFT's layout (gathers: every
        rank of the group must call it)."""
        return {
            suffix: np.ascontiguousarray(
                self.shards.gather(getattr(self, attribute)[name], self.split.get(attribute)).T
            )
            for attribute, suffix in SUFFIXES.items()
        }

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's pieces in HF PEFT's layout, with their split axes there."""
        return {
            suffix: (np.ascontiguousarray(to_numpy(getattr(self, attribute)[name]).T), self._hf_axis(attribute))
            for attribute, suffix in SUFFIXES.items()
        }

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy whole ``lora_A.weight`` ``[r, in]`` / ``lora_B.weight`` ``[out, r]`` in, keeping
        this rank's piece; a shape other than the whole tensor's is an error naming the key."""
        taken = set()
        for attribute, suffix in SUFFIXES.items():
            if suffix not in tensors:
                continue
            array, key = tensors[suffix], key_prefix + suffix
            expected = self._whole_hf_shape(attribute, name)
            if tuple(array.shape) != expected:
                raise AdapterShapeError(key, tuple(array.shape), expected)
            copy_transposed_into(
                getattr(self, attribute)[name], self.shards.piece(array, self._hf_axis(attribute)), key
            )
            taken.add(suffix)
        return taken

    def _whole_hf_shape(self, attribute: str, name: str) -> tuple[int, int]:
        r = self.r[name]
        return (r, self.in_features) if attribute == "lora_A" else (self.out_features, r)

    def _lora_paths(self) -> list[tuple[Any, Any, float, Any]]:
        return list(self._plan) + list(self._cast_plan)


class ColumnParallelLoraLinear(_ParallelLoraLinear):
    """LoRA around ``ColumnParallelLinear``: A ``[in, r]`` whole, B ``[r, out/tp]`` split on
    axis 1 (PaddleNLP's ``ColumnParallelLoRALinear``)."""

    split = {"lora_B": 1}

    def _global_features(self, local_in: int, local_out: int) -> tuple[int, int]:
        return local_in, local_out * self.shards.degree

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """PaddleNLP's column-parallel LoRA forward: ``x W_r + b_r + s (x A) B_r`` on this rank's
        columns, concatenated over the group when the base layer gathers its output."""
        from paddle.distributed.fleet.layers.mpu import mp_ops

        base, group = self.base_layer, self.shards.group
        parallel = group is not None
        input_mp = mp_ops._c_identity(x, group=group) if parallel else x
        result = F.linear(input_mp, base.weight, base.bias)
        for a, b, scaling, dropout in self._lora_paths():
            hidden = (x if dropout is None else dropout(x)).astype(a.dtype) @ a
            hidden = mp_ops._c_identity(hidden, group=group) if parallel else hidden
            result = result + ((hidden @ b) * scaling).astype(result.dtype)
        if base.gather_output and parallel:
            result = mp_ops._c_concat(result, group=group)
        return result


class RowParallelLoraLinear(_ParallelLoraLinear):
    """LoRA around ``RowParallelLinear``: A ``[in/tp, r]`` split on axis 0, B ``[r, out]``
    whole (PaddleNLP's ``RowParallelLoRALinear``)."""

    split = {"lora_A": 0}

    def _global_features(self, local_in: int, local_out: int) -> tuple[int, int]:
        return local_in * self.shards.degree, local_out

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """PaddleNLP's row-parallel LoRA forward: ``allreduce(x_r W_r) + allreduce(x_r A_r) B s
        + b``, ``x_r`` this rank's input columns."""
        from paddle.distributed.fleet.layers.mpu import mp_ops

        base, group = self.base_layer, self.shards.group
        parallel = group is not None

        def allreduce(tensor: paddle.Tensor) -> paddle.Tensor:
            if not parallel:
                return tensor
            return mp_ops._mp_allreduce(tensor, group=group, use_calc_stream=True, use_model_parallel=True)

        input_mp = x if base.input_is_parallel or not parallel else mp_ops._c_split(x, group=group)
        result = allreduce(F.linear(input_mp, base.weight))
        for a, b, scaling, dropout in self._lora_paths():
            hidden = allreduce((input_mp if dropout is None else dropout(input_mp)).astype(a.dtype) @ a)
            result = result + ((hidden @ b) * scaling).astype(result.dtype)
        return result + base.bias if base.bias is not None else result


def wrap_parallel(layer: nn.Layer) -> _ParallelLoraLinear:
    """The LoRA layer for a fleet column- or row-parallel linear (no adapter added yet)."""
    return ColumnParallelLoraLinear(layer) if is_column_parallel(layer) else RowParallelLoraLinear(layer)
