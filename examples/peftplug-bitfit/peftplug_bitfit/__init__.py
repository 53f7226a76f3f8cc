"""peftplug-bitfit: the BitFit method as a third-party peftplug plugin.

peftplug loads this module through the entry point ``bitfit = "peftplug_bitfit"`` of group
``peftplug`` (see pyproject.toml) and registers the hook implementation below, which declares
the method and its layer for each framework. Like every peftplug plugin, it imports no framework
at module level: peftplug imports the torch layer the first time a torch model is adapted (the
Paddle layer the first time a Paddle model is), so ``import peftplug_bitfit`` and
``peftplug methods`` work without either framework installed.
"""

from __future__ import annotations

import peftplug
from peftplug.registration import Method
from peftplug.tensor_roles import TensorRole
from peftplug_bitfit.config import BitFitConfig

__version__ = "0.1.0"

__all__ = ["BitFitConfig", "peftplug_register_methods"]


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
        # Each layer module is imported the first time a model of its framework is adapted.
        layers={"torch": "peftplug_bitfit.torch_layer:wrap", "paddle": "peftplug_bitfit.paddle_layer:wrap"},
    )
