"""(IA)³ layers for PyTorch: Linear (and GPT-2's Conv1D), and ungrouped Conv2d (:class:`IA3Conv2d`).

Math, for a base weight ``W`` (``[out, in]``), bias ``b`` and a learned vector ``l`` (ones at
init, so a fresh adapter changes nothing)::

    feed-forward module:  y = W (l * x) + b        l: [1, in]   scales the input
    other module:         y = l * (W x + b)        l: [out, 1]  scales the output
    merge:    feed-forward  W <- W diag(l)         (W's columns)
              other         W <- diag(l) W,  b <- l * b   (W's rows and the bias)
    unmerge:  divide by l + 1e-8 instead: inexact (rounding; a zero in l cannot be undone)

Conv1D stores ``W`` as ``[in, out]``, so there the roles of rows and columns swap. Parameter
names and shapes are HF PEFT's (``ia3_l.<adapter>``), so state dicts and saved files are
interchangeable with it.

Tensor parallelism (a Linear sharded by ``parallelize_module``): the vector follows its axis, a
DTensor split like the weight's axis it scales (an output vector ``Shard(0)`` on a
column-parallel layer, an input vector ``Shard(1)`` on a row-parallel one, whole otherwise); the
layer takes the base layer's parallel hooks, so forward runs on DTensors in between
(see :mod:`peftplug.backends.torch.tensor_parallel`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.layer import TorchAdapterLayer, adapter_dtype, copy_into, linear_features, to_numpy
from peftplug.backends.torch.ops import is_conv1d
from peftplug.backends.torch.tensor_parallel import adopt_parallel_hooks, dtensor_parameter
from peftplug.errors import PeftplugError
from peftplug.plugins.ia3.config import IA3Config
from peftplug.plugins.ia3.merging import UNMERGE_EPSILON, InexactUnmerge


class _IA3Layer(InexactUnmerge, TorchAdapterLayer):
    """What IA3's torch layers share: the per-adapter vectors ``ia3_l`` and whether each scales
    the input (feed-forward) or the output, merged through ``_weight_scale`` (``l`` shaped for
    the weight) and saved as they are."""

    adapter_layer_names = ("ia3_l",)
    adapter_value_names = ("is_feedforward",)

    def _weight_scale(self, adapter_name: str) -> torch.Tensor:
        """``l`` shaped to multiply the base weight in its own layout (each layer's)."""
        raise NotImplementedError

    def _merge_one(self, name: str) -> None:
        """Scale the weight (and, for output scaling, the bias) by ``l``."""
        base = self.base_layer
        with torch.no_grad():
            base.weight.mul_(self._weight_scale(name))
            if not self.is_feedforward[name] and base.bias is not None:
                base.bias.mul_(self.ia3_l[name].reshape(base.bias.shape))

    def _unmerge_one(self, name: str) -> None:
        """Divide ``l`` back out of the weight (and the bias)."""
        base = self.base_layer
        with torch.no_grad():
            base.weight.div_(self._weight_scale(name) + UNMERGE_EPSILON)
            if not self.is_feedforward[name] and base.bias is not None:
                base.bias.div_(self.ia3_l[name].reshape(base.bias.shape) + UNMERGE_EPSILON)

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``ia3_l`` in HF PEFT's shape for the layer."""
        return {"ia3_l": to_numpy(self.ia3_l[name])}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``ia3_l`` in, checking its shape (a feed-forward mismatch shows as one)."""
        if "ia3_l" not in tensors:
            return set()
        copy_into(self.ia3_l[name], tensors["ia3_l"], key_prefix + "ia3_l")
        return {"ia3_l"}


class IA3Linear(_IA3Layer):
    """(IA)³ around ``nn.Linear`` or transformers' ``Conv1D`` (``fan_in_fan_out``).

    Whether a vector scales the input (feed-forward) or the output is decided per adapter,
    from its config, and recorded in ``is_feedforward``. (HF PEFT decides it once per layer, from
    the first adapter; the two agree whenever adapters sharing a module agree on it.)
    """

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool):
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = fan_in_fan_out
        self.in_features, self.out_features = linear_features(base_layer, fan_in_fan_out)
        self.ia3_l = nn.ParameterDict()
        self.is_feedforward: dict[str, bool] = {}
        adopt_parallel_hooks(self, base_layer)

    def update_layer(self, adapter_name: str, config: IA3Config, module_name: str) -> None:
        """Add adapter ``adapter_name``: ``[1, in]`` for a feed-forward module, else ``[out, 1]``."""
        feedforward = config.is_feedforward(module_name)
        shape = (1, self.in_features) if feedforward else (self.out_features, 1)
        weight = self.base_layer.weight
        factory = {"device": weight.device, "dtype": adapter_dtype(weight)}
        vector = torch.ones(shape, **factory) if config.init_ia3_weights else torch.randn(shape, **factory)
        if self.is_tensor_parallel():  # [1, in] follows W's input axis 1, [out, 1] its output axis 0
            self.ia3_l[adapter_name] = dtensor_parameter(vector, weight, {1: 1} if feedforward else {0: 0})
        else:
            self.ia3_l[adapter_name] = nn.Parameter(vector)
        self.is_feedforward[adapter_name] = feedforward

    def _weight_scale(self, adapter_name: str) -> torch.Tensor:
        """``l`` shaped to multiply ``W`` in its own layout (transposed for Conv1D)."""
        vector = self.ia3_l[adapter_name]
        return vector.T if self.fan_in_fan_out else vector

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``base(l * x)`` for feed-forward adapters, ``l * base(x)`` for the others
        (each active, unmerged adapter)."""
        names = self._active_unmerged()
        for name in (n for n in names if self.is_feedforward[n]):
            vector = self.ia3_l[name]
            x = (x.to(vector.dtype) * vector.flatten()).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        for name in (n for n in names if not self.is_feedforward[n]):
            result = (result * self.ia3_l[name].flatten()).to(result.dtype)
        return result

    def mixed_batch_forward(self, row_adapters: list[str], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Each row scaled by its own adapter's vector, gathered once for the batch (ones on
        rows of the base or of an adapter scaling the other side): ``base(l_i * x_i)`` for
        feed-forward adapters, ``l_i * base(x_i)`` for the others."""
        groups = self._rows_by_adapter(row_adapters, x.shape[0])
        names = [name for name in groups if name != "__base__"]
        if len(groups) == 1 or self._peftplug_adopted_hooks:
            return super().mixed_batch_forward(row_adapters, x, *args, **kwargs)
        scaled_in = [name for name in names if self.is_feedforward[name]]
        if scaled_in:
            vectors = self._row_vectors(row_adapters, scaled_in, self.in_features)
            x = (x.reshape(x.shape[0], -1, x.shape[-1]).to(vectors.dtype) * vectors).reshape(x.shape).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        scaled_out = [name for name in names if not self.is_feedforward[name]]
        if scaled_out:
            vectors = self._row_vectors(row_adapters, scaled_out, self.out_features)
            rows = result.reshape(result.shape[0], -1, result.shape[-1])
            result = (rows.to(vectors.dtype) * vectors).reshape(result.shape).to(result.dtype)
        return result

    def _row_vectors(self, row_adapters: list[str], names: list[str], features: int) -> torch.Tensor:
        """``[rows, 1, features]``: each row's adapter's vector among ``names``, ones elsewhere."""
        vectors = [self.ia3_l[name].flatten() for name in names]
        stack = torch.stack(vectors + [torch.ones_like(vectors[0])])
        slots = {name: slot for slot, name in enumerate(names)}
        index = torch.tensor([slots.get(name, len(names)) for name in row_adapters], device=stack.device)
        return stack[index].reshape(len(row_adapters), 1, features)

    def adapter_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """``ia3_l`` (a DTensor when sharded)."""
        return {"ia3_l": self.ia3_l[name]}


class IA3Conv2d(_IA3Layer):
    """(IA)³ around an ungrouped ``nn.Conv2d``, as HF PEFT's: ``ia3_l`` ``[1, C, 1, 1]`` scales the
    input channels (feed-forward, ``C = in``) or the output channels (``C = out``; the bias too)."""

    def __init__(self, base_layer: nn.Conv2d):
        super().__init__()
        self.base_layer = base_layer
        self.ia3_l = nn.ParameterDict()
        self.is_feedforward: dict[str, bool] = {}

    def update_layer(self, adapter_name: str, config: IA3Config, module_name: str) -> None:
        """Add adapter ``adapter_name``; a grouped convolution is refused, naming the module."""
        base = self.base_layer
        if base.groups != 1:
            raise PeftplugError(
                f"IA3 on {module_name} (Conv2d, groups={base.groups}): peftplug's Conv2d IA3 takes ungrouped "
                "convolutions; leave this module out of target_modules"
            )
        feedforward = config.is_feedforward(module_name)
        shape = (1, base.in_channels if feedforward else base.out_channels, 1, 1)
        factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight)}
        vector = torch.ones(shape, **factory) if config.init_ia3_weights else torch.randn(shape, **factory)
        self.ia3_l[adapter_name] = nn.Parameter(vector)
        self.is_feedforward[adapter_name] = feedforward

    def _weight_scale(self, adapter_name: str) -> torch.Tensor:
        """``l`` shaped to scale the kernel's input channels, or its output channels."""
        vector = self.ia3_l[adapter_name]
        return vector if self.is_feedforward[adapter_name] else vector.transpose(0, 1)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``conv(l * x)`` for feed-forward adapters, ``l * conv(x)`` for the others."""
        names = self._active_unmerged()
        for name in (n for n in names if self.is_feedforward[n]):
            x = (x.to(self.ia3_l[name].dtype) * self.ia3_l[name]).to(x.dtype)
        result = self.base_layer(x, *args, **kwargs)
        for name in (n for n in names if not self.is_feedforward[n]):
            result = (result * self.ia3_l[name]).to(result.dtype)
        return result


def wrap(layer: nn.Module, name: str, config: IA3Config, adapter_name: str) -> nn.Module | None:
    """The IA3 layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported."""
    if isinstance(layer, (IA3Linear, IA3Conv2d)):
        ia3 = layer
    elif isinstance(layer, nn.Linear):
        ia3 = IA3Linear(layer, fan_in_fan_out=False)
    elif is_conv1d(layer):
        config.fan_in_fan_out = True  # Conv1D stores [in, out]; HF PEFT records the same
        ia3 = IA3Linear(layer, fan_in_fan_out=True)
    elif isinstance(layer, nn.Conv2d):
        ia3 = IA3Conv2d(layer)
    else:
        return None
    ia3.update_layer(adapter_name, config, name)
    return ia3
