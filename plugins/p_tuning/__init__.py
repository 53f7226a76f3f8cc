"""The P-tuning plugin: its config, and its encoder for each backend (imported on first use)."""

from __future__ import annotations

from peftplug.markers import hookimpl
from peftplug.plugins.p_tuning.config import PromptEncoderConfig, PromptEncoderReparameterizationType
from peftplug.registration import Method

__all__ = ["PromptEncoderConfig", "PromptEncoderReparameterizationType"]


@hookimpl
def peftplug_register_methods() -> Method:
    """P-tuning, configured by :class:`PromptEncoderConfig` (``peft_type`` ``P_TUNING``)."""
    return Method(
        name="p_tuning",
        config_class=PromptEncoderConfig,
        exports={
            "PromptEncoderReparameterizationType": "peftplug.plugins.p_tuning.config:PromptEncoderReparameterizationType"
        },
        kind="prompt",
        prompt_encoders={
            "torch": "peftplug.plugins.p_tuning.torch_encoder:build_encoder",
            "paddle": "peftplug.plugins.p_tuning.paddle_encoder:build_encoder",
        },
        description="P-tuning: virtual tokens produced by an MLP or LSTM encoder (Liu et al., 2021)",
    )
