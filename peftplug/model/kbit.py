"""``prepare_model_for_kbit_training``: HF PEFT's preparation of a quantized base for training."""

from __future__ import annotations

from typing import Any

from peftplug.manager import get_plugin_manager


def prepare_model_for_kbit_training(
    model: Any, use_gradient_checkpointing: bool = True, gradient_checkpointing_kwargs: dict | None = None
) -> Any:
    """Prepare a quantized (8-bit or 4-bit) base for adapter training, as HF PEFT does: every
    parameter frozen, half-precision parameters (layer norms, embeddings, head) cast to float32,
    and with ``use_gradient_checkpointing`` gradient checkpointing on (with
    ``gradient_checkpointing_kwargs``) and the input embeddings' output requiring grad unless
    ``use_reentrant=False`` makes that unnecessary. Returns ``model``, changed in place."""
    manager = get_plugin_manager()
    backend = manager.backends.get(manager.detect_backend(model)).load()
    backend.prepare_for_kbit_training(model, use_gradient_checkpointing, dict(gradient_checkpointing_kwargs or {}))
    return model
