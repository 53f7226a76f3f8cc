"""LoRA (and DoRA) and IA3 around bitsandbytes' ``Linear8bitLt`` and ``Linear4bit``.

Math as the methods' own layers (:mod:`peftplug.plugins.lora.torch_layers`,
:mod:`peftplug.plugins.ia3.torch_layers`), with ``W`` stored quantized::

    LoRA:  y = Q(W) x + b + s * B (A dropout(x))     A, B float32 (the base's compute is quantized)
    IA3:   y = l * (Q(W) x + b)   or   y = Q(W) (l * x) + b
    merge: W <- quantize(dequantize(W) + s * B A)    (IA3: the rows or columns of dequantize(W) scaled)

The merge is what differs: it reads the weight as floats and quantizes it again (see
:mod:`peftplug.plugins.bitsandbytes.quantized`), warning that the result is rounded; and a 4-bit
layer's output is copied before LoRA adds to it in place.
"""

from __future__ import annotations

import warnings

import bitsandbytes as bnb
import torch
from torch import nn

from peftplug.errors import PeftplugError
from peftplug.plugins.bitsandbytes.quantized import (
    ROUNDING_WARNING,
    bits_of,
    dequantized,
    requantize,
)
from peftplug.plugins.ia3.merging import UNMERGE_EPSILON
from peftplug.plugins.ia3.torch_layers import IA3Linear
from peftplug.plugins.lora.torch_dora import row_norms
from peftplug.plugins.lora.torch_layers import LoraLinear

QUANTIZED_LINEARS = (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)


def _warn_rounding(layer: nn.Module) -> None:
    warnings.warn(ROUNDING_WARNING.format(bits=bits_of(layer)), UserWarning, stacklevel=4)


class QuantizedLoraLinear(LoraLinear):
    """LoRA around a quantized linear: the forward of :class:`LoraLinear`, a merge through
    :func:`dequantized` / :func:`requantize`."""

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer, fan_in_fan_out=False)

    def _base_output(self, rows: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """A 4-bit layer's output can be a view autograd forbids changing in place: a copy of it
        (HF PEFT copies it too)."""
        result = self.base_layer(rows, *args, **kwargs)
        return result.clone() if bits_of(self.base_layer) == 4 else result

    def _weight_out_in(self) -> torch.Tensor:
        """The base weight dequantized, ``[out, in]`` (DoRA's norms read it)."""
        return dequantized(self.base_layer)

    def _merge_one(self, name: str) -> None:
        """``W <- q(W + s * B A)``; DoRA ``W <- q((m / n) (W + s * B A))``, keeping ``n``."""
        _warn_rounding(self.base_layer)
        with torch.no_grad():
            weight, delta = self._weight_out_in(), self.delta_weight(name, torch.float32)
            if name in self.lora_magnitude_vector:
                if self.merged_adapters:
                    raise PeftplugError(
                        f"cannot merge DoRA adapter {name!r} while {self.merged_adapters} is merged into the same "
                        "layer: its norms are of the unmerged weight; unmerge first, or merge it alone"
                    )
                self._dora_norms[name] = row_norms(weight, delta)
                # back to the dequantized dtype before quantizing, as HF PEFT's DoRA merge does
                merged = (self._dora_factor(name, self._dora_norms[name]) * (weight + delta)).to(weight.dtype)
            else:
                merged = weight + delta
            requantize(self.base_layer, merged)

    def _unmerge_one(self, name: str) -> None:
        """``W <- q(W - s * B A)``; DoRA ``W <- q(W n / m - s * B A)``."""
        _warn_rounding(self.base_layer)
        with torch.no_grad():
            weight, delta = self._weight_out_in(), self.delta_weight(name, torch.float32)
            if name not in self.lora_magnitude_vector:
                requantize(self.base_layer, weight - delta)
                return
            factor = self._dora_factor(name, self._dora_norms.pop(name))
            requantize(self.base_layer, (weight / factor - delta).to(weight.dtype))


class QuantizedIA3Linear(IA3Linear):
    """IA3 around a quantized linear: the forward of :class:`IA3Linear`, a merge through
    :func:`dequantized` / :func:`requantize` (HF PEFT has no IA3 merge on these layers)."""

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer, fan_in_fan_out=False)

    def _merge_one(self, name: str) -> None:
        """``W <- q(W diag(l))`` (feed-forward) or ``q(diag(l) W)``, and ``b <- l * b``."""
        self._scale(name, self.ia3_l[name])

    def _unmerge_one(self, name: str) -> None:
        """Divide ``l`` back out (inexact, as for a float base, and rounded again)."""
        self._scale(name, 1 / (self.ia3_l[name] + UNMERGE_EPSILON))

    def _scale(self, name: str, vector: torch.Tensor) -> None:
        _warn_rounding(self.base_layer)
        base = self.base_layer
        with torch.no_grad():
            requantize(base, dequantized(base).float() * vector.float())
            if not self.is_feedforward[name] and base.bias is not None:
                base.bias.mul_(vector.reshape(base.bias.shape).to(base.bias.dtype))


WRAPPERS = {"lora": QuantizedLoraLinear, "ia3": QuantizedIA3Linear}


def wrap(method: str, layer: nn.Module, name: str, config, adapter_name: str) -> nn.Module | None:
    """``method``'s layer around ``layer`` with adapter ``adapter_name`` added; None for a method
    without a quantized layer here or a bitsandbytes layer that is no quantized linear."""
    wrapper = WRAPPERS.get(method)
    if wrapper is None or not isinstance(layer, QUANTIZED_LINEARS):
        return None
    wrapped = wrapper(layer)
    wrapped.update_layer(adapter_name, config, name)
    return wrapped
