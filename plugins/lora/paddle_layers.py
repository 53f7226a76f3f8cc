"""LoRA layers for PaddlePaddle: ``paddle.nn.Linear`` (fleet's tensor-parallel linears:
:mod:`~peftplug.plugins.lora.paddle_parallel_layers`).

Paddle stores a Linear weight ``W`` as ``[in, out]`` (``y = x W + b``), and LoRA's matrices are
kept the same way, as PaddleNLP's ``LoRALinear`` keeps them, so the forward is its forward::

    y = x W + b + s * (dropout(x) A) B        A: [in, r], kaiming-uniform;  B: [r, out], zeros
    merge:  W <- W + s * A B                  s = alpha / r  (alpha / sqrt(r) with rsLoRA)

At the edge (``export_adapter`` / ``import_adapter``) they are HF PEFT's tensors:
``lora_A.weight`` ``[r, in]`` = A^T and ``lora_B.weight`` ``[out, r]`` = B^T.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from peftplug.backends.paddle.layer import (
    PaddleAdapterLayer,
    adapter_dtype,
    copy_transposed_into,
    to_numpy,
)
from peftplug.backends.paddle.tensor_parallel import is_parallel_linear
from peftplug.plugins.lora.config import LoraConfig


class LoraLinear(PaddleAdapterLayer):
    """LoRA around ``paddle.nn.Linear``; parameters ``lora_A.<adapter>`` ``[in, r]`` and
    ``lora_B.<adapter>`` ``[r, out]`` (Paddle's layout)."""

    adapter_layer_names = ("lora_A", "lora_B")
    adapter_value_names = ("r", "lora_alpha", "scaling")

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.weight.shape
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.lora_dropout = nn.LayerDict()
        # What forward applies, precomputed by _adapters_changed: (A, B, scaling, dropout) when
        # the adapters share the base weight's dtype; _cast_plan otherwise (half-precision bases).
        self._plan: tuple[tuple[Any, Any, float, Any], ...] = ()
        self._cast_plan: tuple[tuple[Any, Any, float, Any], ...] = ()
        # A plain nn.Linear is run as F.linear on its parameters (one layer call less).
        self._plain_base = type(base_layer) is nn.Linear

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name`` with its rank, scaling, dropout and initial weights."""
        r, alpha = config.rank_and_alpha(module_name)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = alpha
        self.scaling[adapter_name] = config.scaling(r, alpha)
        dtype = adapter_dtype(self.base_layer.weight)
        init = config.init_lora_weights
        if init == "gaussian":
            a_init = nn.initializer.Normal(std=1 / r)
        else:
            # PaddleNLP's and HF PEFT's init: kaiming-uniform (a = sqrt(5)) on fan_in = in.
            a_init = nn.initializer.KaimingUniform(negative_slope=math.sqrt(5), nonlinearity="leaky_relu")
        b_init = nn.initializer.Constant(0.0) if init is not False else a_init
        self.lora_A[adapter_name] = self.create_parameter(
            [self.in_features, r], dtype=dtype, is_bias=False, default_initializer=a_init
        )
        self.lora_B[adapter_name] = self.create_parameter(
            [r, self.out_features], dtype=dtype, is_bias=False, default_initializer=b_init
        )
        dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        dropout.training = self.base_layer.training
        self.lora_dropout[adapter_name] = dropout
        self._adapters_changed()

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name``, its dropout layer included."""
        super().delete_adapter(name)
        self.lora_dropout._sub_layers.pop(name, None)

    def _adapters_changed(self) -> None:
        plan = tuple(
            (self.lora_A[n], self.lora_B[n], self.scaling[n], _dropout_or_none(self.lora_dropout[n]))
            for n in self._active_unmerged()
        )
        dtype = self.base_layer.weight.dtype
        self._plan = tuple(step for step in plan if step[0].dtype == dtype)
        self._cast_plan = tuple(step for step in plan if step[0].dtype != dtype)

    def delta_weight(self, adapter_name: str) -> paddle.Tensor:
        """``s * A B`` in the base weight's layout ``[in, out]`` and dtype."""
        a, b = self.lora_A[adapter_name], self.lora_B[adapter_name]
        delta = (a @ b) * self.scaling[adapter_name]
        return delta.astype(self.base_layer.weight.dtype)

    def _merge_one(self, name: str) -> None:
        """``W += s * A B``."""
        weight = self.base_layer.weight
        with paddle.no_grad():
            weight.set_value(weight + self.delta_weight(name))

    def _unmerge_one(self, name: str) -> None:
        """``W -= s * A B``."""
        weight = self.base_layer.weight
        with paddle.no_grad():
            weight.set_value(weight - self.delta_weight(name))

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """``x W + b + s * (dropout(x) A) B`` for each active, unmerged adapter."""
        base = self.base_layer
        if self._plain_base:
            result = F.linear(x, base.weight, base.bias)
        else:
            result = base(x, *args, **kwargs)
        for a, b, scaling, dropout in self._plan:
            result += ((x if dropout is None else dropout(x)) @ a @ b) * scaling
        for a, b, scaling, dropout in self._cast_plan:
            hidden = x.astype(a.dtype)
            hidden = hidden if dropout is None else dropout(hidden)
            result = result + ((hidden @ a @ b) * scaling).astype(result.dtype)
        return result

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``lora_A.weight`` ``[r, in]`` and ``lora_B.weight`` ``[out, r]`` (HF PEFT's layout)."""
        return {
            "lora_A.weight": np.ascontiguousarray(to_numpy(self.lora_A[name]).T),
            "lora_B.weight": np.ascontiguousarray(to_numpy(self.lora_B[name]).T),
        }

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``lora_A.weight`` / ``lora_B.weight`` (HF PEFT's layout) in, checking shapes."""
        holders = {"lora_A.weight": self.lora_A[name], "lora_B.weight": self.lora_B[name]}
        taken = set(holders) & set(tensors)
        for suffix in sorted(taken):
            copy_transposed_into(holders[suffix], tensors[suffix], key_prefix + suffix)
        return taken

    def extra_repr(self) -> str:
        """Sizes and ranks, for ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}"


def _dropout_or_none(layer: nn.Layer) -> nn.Layer | None:
    """The dropout layer forward calls, or None for an identity (dropout 0: no call at all)."""
    return None if isinstance(layer, nn.Identity) else layer


def wrap(layer: nn.Layer, name: str, config: LoraConfig, adapter_name: str) -> nn.Layer | None:
    """The LoRA layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported."""
    if isinstance(layer, LoraLinear):
        lora = layer
    elif isinstance(layer, nn.Linear):
        lora = LoraLinear(layer)
    elif is_parallel_linear(layer):
        from peftplug.plugins.lora.paddle_parallel_layers import wrap_parallel

        lora = wrap_parallel(layer)
    else:
        return None
    lora.update_layer(adapter_name, config, name)
    return lora
