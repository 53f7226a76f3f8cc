"""The LoRA plugin: its config, and its layers for each backend (imported on first use)."""

from __future__ import annotations

from peftplug.markers import hookimpl
from peftplug.plugins.lora.config import LoraConfig
from peftplug.registration import Method
from peftplug.tensor_roles import TensorRole

# HF PEFT's layout: lora_A [r, in], lora_B [out, r]; the trained bias (bias="lora_only"/"all")
# and DoRA's magnitude follow the output. Embedding and convolution LoRA tensors are not
# declared: they do not convert between frameworks or shard.
TENSORS = (
    TensorRole("lora_A.weight", (("rank", "in"),)),
    TensorRole("lora_B.weight", (("out", "rank"),)),
    TensorRole("base_layer.bias", (("out",),), required=False),
    TensorRole("lora_magnitude_vector", (("out",),), required=False),
)


@hookimpl
def peftplug_register_methods() -> Method:
    """LoRA, configured by :class:`LoraConfig` (``peft_type`` ``LORA``)."""
    return Method(
        name="lora",
        config_class=LoraConfig,
        layers={
            "torch": "peftplug.plugins.lora.torch_layers:wrap",
            "paddle": "peftplug.plugins.lora.paddle_layers:wrap",
        },
        description="Low-rank adaptation (Hu et al., 2021)",
        tensors=TENSORS,
        rank_field="r",
        rescale_rank="peftplug.plugins.lora.rank:rescale_rank",
        codecs={"paddlenlp": "peftplug.plugins.lora.paddlenlp_codec:CODEC"},
        card_tags=("lora",),
        exports={
            "hotswap_adapter": "peftplug.plugins.lora.torch_hotswap:hotswap_adapter",
            "prepare_model_for_compiled_hotswap": "peftplug.plugins.lora.torch_hotswap:prepare_model_for_compiled_hotswap",
        },
        namespaces={
            "paddlenlp": {
                "LoRAConfig": "peftplug.plugins.lora.paddlenlp_api:LoRAConfig",
                "LoRAModel": "peftplug.plugins.lora.paddlenlp_api:LoRAModel",
            }
        },
        model_methods={"add_weighted_adapter": "peftplug.plugins.lora.weighted:add_weighted_adapter"},
    )
