"""The IA3 plugin: its config, and its layers for each backend (imported on first use)."""

from __future__ import annotations

from typing import Any

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
        description="(IA)³: learned vectors rescale activations (Liu et al., 2022)",
        # [out, 1] scales a layer's output, [1, in] a feed-forward layer's input (HF PEFT's layout).
        tensors=(TensorRole("ia3_l", (("out", "one"), ("one", "in")), fill=1.0),),
        module_fields={"feedforward_modules": "in"},
    )


@hookimpl
def peftplug_wrap_layer(method: str, backend: str, layer: Any, name: str, config: IA3Config, adapter_name: str):
    """IA3 layers for torch's Linear and Conv1D, and Paddle's Linear."""
    if method != "ia3":
        return None
    if backend == "torch":
        from peftplug.plugins.ia3.torch_layers import wrap

        return wrap(layer, name, config, adapter_name)
    if backend == "paddle":
        from peftplug.plugins.ia3.paddle_layers import wrap as wrap_paddle

        return wrap_paddle(layer, name, config, adapter_name)
    return None
