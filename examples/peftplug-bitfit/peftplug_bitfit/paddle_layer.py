"""BitFit's PaddlePaddle layer, imported only once a Paddle model is adapted.

Same math as :mod:`peftplug_bitfit.torch_layer` (``y = W x + b + delta``); Paddle's
``nn.Linear`` keeps its weight ``[in, out]``, but the bias and the delta are ``[out]`` in both
frameworks, so the saved ``bitfit_bias`` needs no transposition and the files are the same.
"""

from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

from peftplug.backends.paddle.layer import PaddleAdapterLayer, adapter_dtype, copy_into, to_numpy
from peftplug_bitfit.config import BitFitConfig


class BitFitLinear(PaddleAdapterLayer):
    """A trainable bias delta per adapter around ``paddle.nn.Linear``; per-adapter parameters
    live in ``bitfit_bias`` (a ``paddle.nn.ParameterDict``)."""

    adapter_layer_names = ("bitfit_bias",)

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.out_features = base_layer.weight.shape[1]  # Paddle's Linear weight is [in, out]
        self.bitfit_bias = nn.ParameterDict()
        self._bias_created_by_merge = False

    def update_layer(self, adapter_name: str) -> None:
        """Add adapter ``adapter_name``: a zero delta of ``out_features`` values (float32 for
        half-precision bases)."""
        self.bitfit_bias[adapter_name] = self.create_parameter(
            shape=[self.out_features],
            dtype=adapter_dtype(self.base_layer.weight),
            default_initializer=nn.initializer.Constant(0.0),
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """``base(x) + delta`` for each active, unmerged adapter."""
        result = self.base_layer(x)
        for name in self._active_unmerged():
            result = result + self.bitfit_bias[name].astype(result.dtype)
        return result

    def merge(self, names: list[str]) -> None:
        """``b += delta`` for each adapter in ``names`` not merged yet; creates ``b`` if absent."""
        base = self.base_layer
        with paddle.no_grad():
            for name in names:
                if name in self.merged_adapters:
                    continue
                if base.bias is None:
                    bias = base.create_parameter(
                        shape=[self.out_features],
                        dtype=base.weight.dtype,
                        is_bias=True,
                        default_initializer=nn.initializer.Constant(0.0),
                    )
                    bias.stop_gradient = True
                    base.bias = bias
                    self._bias_created_by_merge = True
                base.bias.set_value(base.bias + self.bitfit_bias[name].astype(base.bias.dtype))
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """``b -= delta`` for every merged adapter; a bias that merge created is removed."""
        base = self.base_layer
        with paddle.no_grad():
            while self.merged_adapters:
                delta = self.bitfit_bias[self.merged_adapters.pop()]
                base.bias.set_value(base.bias - delta.astype(base.bias.dtype))
        if self._bias_created_by_merge:
            base.bias = None
            self._bias_created_by_merge = False

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``{"bitfit_bias": delta}``, shape ``[out_features]``."""
        return {"bitfit_bias": to_numpy(self.bitfit_bias[name])}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``bitfit_bias`` in (shape checked, errors name the key); returns what it took."""
        if "bitfit_bias" not in tensors:
            return set()
        copy_into(self.bitfit_bias[name], tensors["bitfit_bias"], key_prefix + "bitfit_bias")
        return {"bitfit_bias"}


def wrap(layer: nn.Layer, name: str, config: BitFitConfig, adapter_name: str) -> BitFitLinear | None:
    """The BitFit layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported.

    BitFit has no per-module option, so ``name`` and ``config`` go unused.
    """
    if isinstance(layer, BitFitLinear):
        bitfit = layer
    elif isinstance(layer, nn.Linear):
        bitfit = BitFitLinear(layer)
    else:
        return None
    bitfit.update_layer(adapter_name)
    return bitfit
