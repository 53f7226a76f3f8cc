"""BitFit's PyTorch layer, imported only once a torch model is adapted.

Math, for a base layer ``y = W x + b`` with ``out_features`` outputs::

    y = W x + b + delta            delta: [out_features], zeros at first, the only trained values
    merge:    b <- b + delta       (a zero bias is created first if the base layer has none)
    unmerge:  b <- b - delta       (and a bias created by merge is removed again)

The saved tensor of a layer is ``<module path>.bitfit_bias`` (shape ``[out_features]``), so the
state passes through peftplug's formats like any built-in method's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.layer import TorchAdapterLayer, adapter_dtype, copy_into, to_numpy
from peftplug.backends.torch.ops import is_conv1d
from peftplug_bitfit.config import BitFitConfig


class BitFitLinear(TorchAdapterLayer):
    """A trainable bias delta per adapter around ``nn.Linear`` (or transformers' ``Conv1D``).

    Per-adapter parameters live in ``bitfit_bias`` (an ``nn.ParameterDict``), which is what
    :class:`TorchAdapterLayer` needs to list, activate, freeze and delete adapters.
    """

    adapter_layer_names = ("bitfit_bias",)

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        # nn.Linear stores its weight [out, in]; GPT-2's Conv1D stores it [in, out].
        self.out_features = weight.shape[1] if is_conv1d(base_layer) else weight.shape[0]
        self.bitfit_bias = nn.ParameterDict()
        self._bias_created_by_merge = False

    def update_layer(self, adapter_name: str) -> None:
        """Add adapter ``adapter_name``: a zero delta of ``out_features`` values.

        The delta has the base weight's dtype and device; half-precision bases get a float32
        delta, which trains more stably (as LoRA's layers do).
        """
        weight = self.base_layer.weight
        self.bitfit_bias[adapter_name] = nn.Parameter(
            torch.zeros(self.out_features, device=weight.device, dtype=adapter_dtype(weight))
        )

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``base(x) + delta`` for each active, unmerged adapter."""
        result = self.base_layer(x, *args, **kwargs)
        for name in self._active_unmerged():
            result = result + self.bitfit_bias[name].to(result.dtype)
        return result

    def merge(self, names: list[str]) -> None:
        """``b += delta`` for each adapter in ``names`` not merged yet; creates ``b`` if absent."""
        base = self.base_layer
        with torch.no_grad():
            for name in names:
                if name in self.merged_adapters:
                    continue
                if base.bias is None:
                    weight = base.weight
                    base.bias = nn.Parameter(
                        torch.zeros(self.out_features, device=weight.device, dtype=weight.dtype), requires_grad=False
                    )
                    self._bias_created_by_merge = True
                base.bias.add_(self.bitfit_bias[name].to(base.bias.dtype))
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """``b -= delta`` for every merged adapter, last merged first; a bias that merge created
        is removed, so the base layer is as it was."""
        base = self.base_layer
        with torch.no_grad():
            while self.merged_adapters:
                base.bias.sub_(self.bitfit_bias[self.merged_adapters.pop()].to(base.bias.dtype))
        if self._bias_created_by_merge:
            base.bias = None
            self._bias_created_by_merge = False

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``{"bitfit_bias": delta}``, shape ``[out_features]``."""
        return {"bitfit_bias": to_numpy(self.bitfit_bias[name])}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``bitfit_bias`` in (shape checked, errors name ``key_prefix + "bitfit_bias"``);
        returns the suffixes it consumed."""
        if "bitfit_bias" not in tensors:
            return set()
        copy_into(self.bitfit_bias[name], tensors["bitfit_bias"], key_prefix + "bitfit_bias")
        return {"bitfit_bias"}


def wrap(layer: nn.Module, name: str, config: BitFitConfig, adapter_name: str) -> BitFitLinear | None:
    """The BitFit layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported.

    A layer that is already a :class:`BitFitLinear` gets the new adapter added to it. BitFit has no
    per-module option, so ``name`` and ``config`` go unused.
    """
    if isinstance(layer, BitFitLinear):
        bitfit = layer
    elif isinstance(layer, nn.Linear) or is_conv1d(layer):
        bitfit = BitFitLinear(layer)
    else:
        return None
    bitfit.update_layer(adapter_name)
    return bitfit
