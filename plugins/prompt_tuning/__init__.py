"""The prompt-tuning plugin: its config, and its encoder for each backend (imported on first use)."""

from __future__ import annotations

import warnings

from peftplug.markers import hookimpl
from peftplug.plugins.prompt_tuning.config import PromptTuningConfig, PromptTuningInit
from peftplug.registration import Method
from peftplug.state import AdapterState

__all__ = ["PromptTuningConfig", "PromptTuningInit"]


@hookimpl
def peftplug_register_methods() -> Method:
    """Prompt tuning, configured by :class:`PromptTuningConfig` (``peft_type`` ``PROMPT_TUNING``)."""
    return Method(
        name="prompt_tuning",
        config_class=PromptTuningConfig,
        exports={"PromptTuningInit": "peftplug.plugins.prompt_tuning.config:PromptTuningInit"},
        kind="prompt",
        prompt_encoders={
            "torch": "peftplug.plugins.prompt_tuning.torch_encoder:build_encoder",
            "paddle": "peftplug.plugins.prompt_tuning.paddle_encoder:build_encoder",
        },
        description="Prompt tuning: learned virtual-token embeddings before the input (Lester et al., 2021)",
    )


@hookimpl
def peftplug_before_save(state: AdapterState, format: str) -> None:
    """Warn when a TEXT-initialised config has no tokenizer path: HF PEFT refuses to read it."""
    config = state.config
    if (
        isinstance(config, PromptTuningConfig)
        and config.prompt_tuning_init == "TEXT"
        and not config.tokenizer_name_or_path
    ):
        warnings.warn(
            "PromptTuningConfig: prompt_tuning_init='TEXT' with tokenizer_name_or_path=None (the tokenizer object "
            "has no name_or_path); HF PEFT refuses such an adapter_config.json. Set tokenizer_name_or_path.",
            UserWarning,
            stacklevel=2,
        )
