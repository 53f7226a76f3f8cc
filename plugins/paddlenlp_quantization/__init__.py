"""PaddleNLP's weight-only quantized linear (``paddlenlp.quantization.QuantizationLinear``:
weight_only_int8, weight_only_int4, llm.int8) as a layer type: LoRA on a quantized Paddle base,
as PaddleNLP's ``QuantizationLoRALinear`` does it.

The plugin answers ``peftplug_wrap_layer`` before LoRA's own layers (``tryfirst``) for such a
layer only, judged by its class's module, and imports its layer module then.
"""

from __future__ import annotations

from typing import Any

from peftplug.markers import hookimpl

LAYER_MODULE = "paddlenlp.quantization"
METHOD = "lora"


def is_quantization_linear(layer: Any) -> bool:
    """True for PaddleNLP's ``QuantizationLinear`` (judged by its class: nothing is imported)."""
    return type(layer).__name__ == "QuantizationLinear" and type(layer).__module__.startswith(LAYER_MODULE)


@hookimpl(tryfirst=True)
def peftplug_wrap_layer(method: str, backend: str, layer: Any, name: str, config: Any, adapter_name: str):
    """LoRA around a ``QuantizationLinear`` on Paddle; None for anything else."""
    if backend != "paddle" or method != METHOD or not is_quantization_linear(layer):
        return None
    from peftplug.plugins.paddlenlp_quantization.layers import wrap

    return wrap(layer, name, config, adapter_name)
