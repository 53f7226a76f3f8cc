"""The P-tuning plugin: its config, and its encoder for each backend (imported on first use)."""

from __future__ import annotations

from typing import Any

from peftplug.config import AdapterConfig
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
        kind="prompt",
        description="P-tuning: virtual tokens produced by an MLP or LSTM encoder (Liu et al., 2021)",
    )


@hookimpl
def peftplug_build_prompt_encoder(method: str, backend: str, config: AdapterConfig, model: Any) -> Any | None:
    """The prompt encoder for torch or paddle (MLP or LSTM reparameterisation)."""
    if method != "p_tuning":
        return None
    if backend == "torch":
        from peftplug.plugins.p_tuning.torch_encoder import PromptEncoder

        return PromptEncoder(config)
    if backend == "paddle":
        from peftplug.plugins.p_tuning.paddle_encoder import PaddlePromptEncoderNetwork

        return PaddlePromptEncoderNetwork(config)
    return None
