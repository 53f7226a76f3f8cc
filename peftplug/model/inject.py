"""``inject_adapter_in_model``: HF PEFT's adapter layers put into a plain model, no wrapper."""

from __future__ import annotations

from typing import Any

from peftplug.config import AdapterConfig
from peftplug.errors import ConfigError
from peftplug.model.api import get_peft_model
from peftplug.model.peft_model import DEFAULT_ADAPTER


def inject_adapter_in_model(
    peft_config: AdapterConfig,
    model: Any,
    adapter_name: str = DEFAULT_ADAPTER,
    low_cpu_mem_usage: bool = False,
    state_dict: dict[str, Any] | None = None,
) -> Any:
    """Put the adapter layers of ``peft_config`` into ``model`` in place and return ``model``
    itself (no :class:`~peftplug.PeftModel` around it), as HF PEFT does: only the adapter's
    parameters stay trainable, and ``model.peft_config`` holds the config by adapter name, so
    :func:`peftplug.get_peft_model_state_dict` and :func:`peftplug.set_peft_model_state_dict` take
    the model. Layer methods only: a prompt-learning config is refused, as in HF PEFT, before
    anything changes.

    ``low_cpu_mem_usage`` changes nothing (the adapter's tensors are small and made at once).
    ``state_dict`` (HF PEFT: target the modules its keys name) is not supported: give
    ``target_modules`` in the config.
    """
    if not isinstance(peft_config, AdapterConfig):
        raise ConfigError("inject_adapter_in_model", "peft_config", peft_config, "an AdapterConfig such as LoraConfig")
    if peft_config.is_prompt_learning:
        raise ConfigError(
            type(peft_config).__name__,
            "peft_type",
            peft_config.peft_type,
            "a layer method: inject_adapter_in_model does not support prompt learning (use get_peft_model)",
        )
    if state_dict is not None:
        raise ConfigError(
            "inject_adapter_in_model",
            "state_dict",
            f"<{len(state_dict)} tensors>",
            "None: peftplug targets the config's target_modules, not a state dict's keys",
        )
    peft_model = get_peft_model(model, peft_config, adapter_name=adapter_name)
    inner = peft_model.base_model.model
    inner.peft_config = peft_model.peft_config
    return inner
