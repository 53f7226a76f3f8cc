"""The prefix-tuning plugin: its config, and its encoder for each backend (imported on first use)."""

from __future__ import annotations

from typing import Any

from peftplug.config import AdapterConfig
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
        description="Prefix tuning: learned keys and values before every attention layer (Li & Liang, 2021)",
    )


@hookimpl
def peftplug_build_prompt_encoder(method: str, backend: str, config: AdapterConfig, model: Any) -> Any | None:
    """The prefix encoder for torch or paddle (with or without projection)."""
    if method != "prefix_tuning":
        return None
    if backend == "torch":
        from peftplug.plugins.prefix_tuning.torch_encoder import PrefixEncoder

        return PrefixEncoder(config)
    if backend == "paddle":
        from peftplug.plugins.prefix_tuning.paddle_encoder import PaddlePrefixEncoder

        return PaddlePrefixEncoder(config)
    return None
