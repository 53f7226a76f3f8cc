"""The user-facing entry points: get_peft_model and friends, dispatching through the hooks."""

from __future__ import annotations

import warnings
from typing import Any

from peftplug.adapter_names import check_adapter_name
from peftplug.config import AdapterConfig
from peftplug.errors import ConfigError, PeftplugError
from peftplug.manager import get_plugin_manager
from peftplug.model.peft_model import DEFAULT_ADAPTER, PeftModel
from peftplug.model.task_models import as_task_model, task_class


def get_peft_model(model: Any, peft_config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> PeftModel:
    """Wrap ``model`` (a ``torch.nn.Module`` or a ``paddle.nn.Layer``) with a new adapter.

    The backend is detected from the model, the method from the config's class, and the
    adapter injected through the method's declared layers (or a ``peftplug_wrap_layer`` hook
    that overrides them). Only the adapter's parameters are left trainable. Returns the
    backend's :class:`PeftModel`; with a ``task_type``, also an instance of its task class
    (``PeftModelForCausalLM``, ...), as in HF PEFT.
    """
    if not isinstance(peft_config, AdapterConfig):
        raise ConfigError("get_peft_model", "peft_config", peft_config, "an AdapterConfig such as peftplug.LoraConfig")
    check_adapter_name(adapter_name)
    manager = get_plugin_manager()
    backend = manager.backends.get(manager.detect_backend(model)).load()
    method = manager.method_for_config(peft_config)
    _check_not_adapted_yet(model, backend, adapter_name)
    peft_model = backend.create_peft_model(model, method)
    peft_model.add_adapter(adapter_name, peft_config)
    return as_task_model(peft_model, task_class(peft_config.task_type))


def _check_not_adapted_yet(model: Any, backend: Any, adapter_name: str) -> None:
    """Refuse a second ``get_peft_model`` that would re-initialise an adapter of the same name in
    layers an earlier call wrapped (the first model's trained weights would be overwritten);
    warn as HF PEFT does when the model holds other adapters."""
    existing = sorted(
        {
            name
            for _, module in backend.named_modules(model)
            if backend.is_adapter_layer(module)
            for name in module.adapter_names
        }
    )
    if adapter_name in existing:
        raise PeftplugError(
            f"this model already holds adapter {adapter_name!r} (its layers were wrapped by an earlier get_peft_model): "
            "another get_peft_model would re-initialise it over the trained weights. Add a new adapter with "
            "add_adapter(name, config) on the first PeftModel, or unload() it first"
        )
    if existing:
        warnings.warn(
            f"You are trying to modify a model with PEFT for a second time (it holds adapters {existing}). If you want "
            "to reload the model with a different config, make sure to call `.unload()` before.",
            UserWarning,
            stacklevel=3,
        )
