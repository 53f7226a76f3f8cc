"""The prefix-tuning plugin: its config, and its encoder for each backend (imported on first use)."""

from __future__ import annotations

from peftplug.markers import hookimpl
from peftplug.plugins.prefix_tuning.config import PrefixTuningConfig
from peftplug.registration import Method

__all__ = ["PrefixTuningConfig"]


@hookimpl
def peftplug_register_methods() -> Method:
    """Prefix tuning, configured by :class:`PrefixTuningConfig` (``peft_type`` ``PREFIX_TUNING``)."""
    return Method(
        name="prefix_tuning",
        config_class=PrefixTuningConfig,
        kind="prompt",
        prefix_cache=True,
        codecs={"paddlenlp": "peftplug.plugins.prefix_tuning.paddlenlp_codec:CODEC"},
        prompt_encoders={
            "torch": "peftplug.plugins.prefix_tuning.torch_encoder:build_encoder",
            "paddle": "peftplug.plugins.prefix_tuning.paddle_encoder:build_encoder",
        },
        description="Prefix tuning: learned keys and values before every attention layer (Li & Liang, 2021)",
        namespaces={
            "paddlenlp": {
                "PrefixConfig": "peftplug.plugins.prefix_tuning.paddlenlp_api:PrefixConfig",
                "PrefixModelForCausalLM": "peftplug.plugins.prefix_tuning.paddlenlp_api:PrefixModelForCausalLM",
                "llama_postprocess_past_key_value": (
                    "peftplug.plugins.prefix_tuning.paddlenlp_hooks:llama_postprocess_past_key_value"
                ),
                "bloom_postprocess_past_key_value": (
                    "peftplug.plugins.prefix_tuning.paddlenlp_hooks:bloom_postprocess_past_key_value"
                ),
            }
        },
    )
