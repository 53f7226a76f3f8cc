"""peftplug-bitfit: the BitFit method as a third-party peftplug plugin.

peftplug loads this module through the entry point ``bitfit = "peftplug_bitfit"`` of group
``peftplug`` (see pyproject.toml) and registers the hook implementations below. Like every
peftplug plugin, it imports no framework at module level: the torch layer is imported the first
time a torch model is adapted (the Paddle layer the first time a Paddle model is), so
``import peftplug_bitfit`` and ``peftplug methods`` work without either framework installed.
"""

from __future__ import annotations

from typing import Any

import peftplug
from peftplug.registration import Method
from peftplug.tensor_roles import TensorRole
from peftplug_bitfit.config import BitFitConfig

__version__ = "0.1.0"

__all__ = ["BitFitConfig", "peftplug_register_methods", "peftplug_wrap_layer"]


@peftplug.hookimpl
def peftplug_register_methods() -> Method:
    """BitFit, configured by :class:`BitFitConfig` (``peft_type`` ``BITFIT``)."""
    return Method(
        name="bitfit",
        config_class=BitFitConfig,
        description="BitFit: a trainable bias delta per target layer (Ben Zaken et al., 2021)",
        # What conversion, the formats and tensor parallelism need: one tensor along the layer's
        # output, 0 (no change) for a part of a fused module that BitFit does not adapt.
        tensors=(TensorRole("bitfit_bias", (("out",),), fill=0.0),),
    )


@peftplug.hookimpl
def peftplug_wrap_layer(method: str, backend: str, layer: Any, name: str, config: BitFitConfig, adapter_name: str):
    """The BitFit layer around ``layer`` on torch (``nn.Linear``, transformers' ``Conv1D``) or
    on Paddle (``paddle.nn.Linear``).

    Answers ``None`` ("not mine") for every other method, backend or layer type, so the core can
    report that no plugin implements the pair, or another plugin can answer for it.
    """
    if method != "bitfit":
        return None
    if backend == "torch":
        from peftplug_bitfit.torch_layer import wrap
    elif backend == "paddle":
        from peftplug_bitfit.paddle_layer import wrap
    else:
        return None
    return wrap(layer, adapter_name)
