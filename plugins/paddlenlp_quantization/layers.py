"""LoRA around PaddleNLP's ``QuantizationLinear``.

Math as :class:`~peftplug.plugins.lora.paddle_layers.LoraLinear`'s, with ``W`` stored quantized
(``quant_weight`` and ``quant_scale``, run by Paddle's ``weight_only_linear`` /
``llm_int8_linear``)::

    y = Q(W) x + b + s * (dropout(x) A) B      A: [in, r], B: [r, out], in the layer's compute dtype

The parameters and files are those of a LoRA adapter on a plain Linear, so PaddleNLP's
``LoRAModel`` (whose ``QuantizationLoRALinear`` keeps the same ``lora_A`` / ``lora_B``) reads them.
Merging is refused: it needs the weight dequantized and quantized again, which Paddle's CPU
build cannot do (``weight_dequantize`` / ``weight_quantize`` have GPU kernels only); PaddleNLP
merges into a float copy of the weight instead.
"""

from __future__ import annotations

from typing import Any

import paddle
from paddle import nn

from peftplug.errors import PeftplugError
from peftplug.plugins.lora.config import LoraConfig
from peftplug.plugins.lora.paddle_layers import LoraLinear

HALF = ("float16", "bfloat16")


class QuantizedLoraLinear(LoraLinear):
    """LoRA around a ``QuantizationLinear``: the quantized base's own forward, then the adapters."""

    def _base_features(self, base_layer: nn.Layer) -> tuple[int, int]:
        """``(in, out)`` as the layer records them (its quantized weight is ``[out, in]``, packed for int4)."""
        return base_layer.in_features, base_layer.out_features

    def _base_dtype(self) -> Any:
        """The layer's compute dtype."""
        return paddle.base.framework.convert_np_dtype_to_dtype_(self.base_layer._dtype)

    def _adapter_dtype(self) -> Any:
        """float32 for a half-precision compute dtype, else the compute dtype."""
        return paddle.float32 if self.base_layer._dtype in HALF else self._base_dtype()

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name``; DoRA is refused (its norms need the float weight)."""
        if config.use_dora:
            raise PeftplugError(
                f"DoRA (use_dora=True) on {module_name}: a PaddleNLP QuantizationLinear "
                f"({self.base_layer.quant_algo}) has no float weight to take its norms from; use plain LoRA"
            )
        super().update_layer(adapter_name, config, module_name)

    def _merge_one(self, name: str) -> None:
        raise PeftplugError(
            f"cannot merge LoRA adapter {name!r} into a PaddleNLP QuantizationLinear ({self.base_layer.quant_algo}): "
            "that needs weight_dequantize and weight_quantize, which Paddle has for GPUs only; keep the adapter "
            "unmerged, or merge on a float base"
        )

    _unmerge_one = _merge_one


def wrap(layer: nn.Layer, name: str, config: LoraConfig, adapter_name: str) -> QuantizedLoraLinear:
    """The LoRA layer around ``layer`` with adapter ``adapter_name`` added."""
    wrapped = QuantizedLoraLinear(layer)
    wrapped.update_layer(adapter_name, config, name)
    return wrapped
