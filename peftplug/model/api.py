"""The user-facing entry points: get_peft_model and friends, dispatching through the hooks."""

from __future__ import annotations

from typing import Any

from peftplug.adapter_names import check_adapter_name
from peftplug.config import AdapterConfig
from peftplug.errors import ConfigError
from peftplug.manager import get_plugin_manager
from peftplug.model.peft_model import DEFAULT_ADAPTER, PeftModel


def get_peft_model(model: Any, peft_config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> PeftModel:
    """Wrap ``model`` (a ``torch.nn.Module`` or a ``paddle.nn.Layer``) with a new adapter.

    The backend is detected from the model, the method from the config's class, and the
    adapter injected through the method's declared layers (or a ``peftplug_wrap_layer`` hook
    that overrides them). Only the adapter's parameters are left trainable. Returns the
    backend's :class:`PeftModel`.
    """
    if not isinstance(peft_config, AdapterConfig):
        raise ConfigError("get_peft_model", "peft_config", peft_config, "an AdapterConfig such as peftplug.LoraConfig")
    check_adapter_name(adapter_name)
    manager = get_plugin_manager()
    backend = manager.backends.get(manager.detect_backend(model)).load()
    method = manager.method_for_config(peft_config)
    peft_model = backend.create_peft_model(model, method)
    peft_model.add_adapter(adapter_name, peft_config)
    return peft_model
