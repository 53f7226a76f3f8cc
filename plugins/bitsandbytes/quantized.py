"""A bitsandbytes weight read as floats and written back quantized, the way HF PEFT merges.

- ``Linear8bitLt``: an ``Int8Params`` ``[out, in]`` int8 with a scale per row (``SCB``):
  ``W = q * SCB / 127``; written back as a new ``Int8Params``, which quantizes row-wise again.
- ``Linear4bit``: a ``Params4bit`` (packed nf4 / fp4, blocks with their absmax, nested when
  double-quantized); ``bitsandbytes.functional.dequantize_4bit`` reads it, a new ``Params4bit``
  with the same quantization settings writes it (see :func:`keep_standard_packing` for the
  CPU inference packing an adapted model must not take).

Requantizing rounds: a merged model is close to, not equal to, the unmerged one (about 1e-2 on
8-bit, more on 4-bit); it equals HF PEFT's merge of the same adapter, which rounds alike.
"""

from __future__ import annotations

import bitsandbytes as bnb
import torch
from torch import nn

ROUNDING_WARNING = (
    "merging into a {bits}-bit bitsandbytes layer dequantizes, adds and quantizes again: the merged model's "
    "outputs differ from the unmerged model's by the rounding (HF PEFT's merge rounds the same way)"
)


def bits_of(layer: nn.Module) -> int:
    """8 for ``Linear8bitLt``, 4 for ``Linear4bit``."""
    if isinstance(layer, bnb.nn.Linear8bitLt):
        return 8
    if isinstance(layer, bnb.nn.Linear4bit):
        return 4
    raise TypeError(f"{type(layer).__name__} is no bitsandbytes Linear8bitLt or Linear4bit")


def dequantized(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as floats ``[out, in]``: float32 for 8-bit, the quantization state's
    dtype for 4-bit."""
    weight = layer.weight
    if bits_of(layer) == 8:
        scales = layer.state.SCB if layer.state.SCB is not None else weight.SCB
        return bnb.functional.int8_vectorwise_dequant(weight.data, scales).float()
    return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)


def keep_standard_packing(model: nn.Module) -> None:
    """Keep every 4-bit weight of an adapted model in the standard packing for good.

    On a CPU with AVX512-BF16, bitsandbytes repacks a ``Linear4bit`` weight for an inference
    kernel at its first eval forward without gradients; after that no gradient flows through the
    layer (so no adapter before it trains), and ``dequantize_4bit`` cannot read the weight (HF
    PEFT's merge then reads garbage). A weight repacked already is brought back as bitsandbytes'
    own state-dict save does."""
    for layer in model.modules():
        if isinstance(layer, bnb.nn.Linear4bit):
            _standard_packing(layer)


def _standard_packing(layer: nn.Module) -> None:
    layer.support_avx512bf16_for_cpu = False
    weight = layer.weight
    if getattr(weight.quant_state, "packing_format_for_cpu", False):
        weight.data, weight.quant_state = bnb.functional._convert_weight_packed_for_cpu_inverse(
            weight.data, weight.quant_state
        )


def requantize(layer: nn.Module, weight: torch.Tensor) -> None:
    """Replace the layer's weight by ``weight`` (float ``[out, in]``) quantized as it was."""
    old = layer.weight
    if bits_of(layer) == 8:
        layer.weight = bnb.nn.Int8Params(
            weight.to("cpu"), requires_grad=False, has_fp16_weights=old.has_fp16_weights
        ).to(old.device)
        layer.state.reset_grads()
        layer.state.SCB = None
        return
    settings = {
        "blocksize": old.blocksize,
        "compress_statistics": old.compress_statistics,
        "quant_type": old.quant_type,
        "quant_storage": old.quant_storage,
        "module": old.module,
    }
    layer.weight = bnb.nn.Params4bit(weight.to("cpu"), requires_grad=False, **settings).to(old.device)
