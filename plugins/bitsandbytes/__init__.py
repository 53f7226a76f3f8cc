"""bitsandbytes' quantized linears as a layer type: LoRA (and DoRA) and IA3 on ``Linear8bitLt``
and ``Linear4bit`` (nf4 / fp4, with or without double quantization), on torch.

A layer type is a plugin of its own: this one answers ``peftplug_wrap_layer`` before the methods'
own layers (``tryfirst``) for a layer whose class comes from bitsandbytes, and answers None for
anything else. Its layers are imported only then, when bitsandbytes is already loaded.
"""

from __future__ import annotations

import sys
from typing import Any

from peftplug.markers import hookimpl

LAYER_PACKAGE = "bitsandbytes"


def is_quantized_layer(layer: Any) -> bool:
    """True for a layer of bitsandbytes (judged by its class's module: nothing is imported)."""
    return type(layer).__module__.split(".")[0] == LAYER_PACKAGE


@hookimpl(tryfirst=True)
def peftplug_wrap_layer(method: str, backend: str, layer: Any, name: str, config: Any, adapter_name: str):
    """The quantized layer of ``method`` around a bitsandbytes ``Linear8bitLt`` / ``Linear4bit``;
    None for other layers, backends and methods (the methods' own layers then answer)."""
    if backend != "torch" or not is_quantized_layer(layer):
        return None
    from peftplug.plugins.bitsandbytes.layers import wrap

    return wrap(method, layer, name, config, adapter_name)


@hookimpl
def peftplug_adapter_injected(model: Any, adapter_name: str, config: Any, wrapped: list[str]) -> None:
    """Keep a torch model's 4-bit weights out of bitsandbytes' CPU inference packing, through
    which no gradient flows (see :func:`~peftplug.plugins.bitsandbytes.quantized.keep_standard_packing`)."""
    if LAYER_PACKAGE not in sys.modules or "torch" not in sys.modules:
        return
    import torch

    if isinstance(model, torch.nn.Module):
        from peftplug.plugins.bitsandbytes.quantized import keep_standard_packing

        keep_standard_packing(model)
