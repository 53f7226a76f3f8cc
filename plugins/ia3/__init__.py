"""The IA3 plugin: its config, and its layers for each backend (imported on first use)."""

from __future__ import annotations

from peftplug.markers import hookimpl
from peftplug.plugins.ia3.config import IA3Config
from peftplug.registration import Method
from peftplug.tensor_roles import TensorRole


@hookimpl
def peftplug_register_methods() -> Method:
    """(IA)³, configured by :class:`IA3Config` (``peft_type`` ``IA3``)."""
    return Method(
        name="ia3",
        config_class=IA3Config,
        layers={
            "torch": "peftplug.plugins.ia3.torch_layers:wrap",
            "paddle": "peftplug.plugins.ia3.paddle_layers:wrap",
        },
        description="(IA)³: learned vectors rescale activations (Liu et al., 2022)",
        # [out, 1] scales a layer's output, [1, in] a feed-forward layer's input (HF PEFT's layout).
        tensors=(TensorRole("ia3_l", (("out", "one"), ("one", "in")), fill=1.0),),
        module_fields={"feedforward_modules": "in"},
    )
