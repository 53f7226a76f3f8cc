"""The PyTorch backend plugin. Registers the backend and detects torch models; torch itself is
imported only when a torch model is used (by then the user has imported it)."""

from __future__ import annotations

import sys
from typing import Any

from peftplug.markers import hookimpl
from peftplug.registration import Backend


@hookimpl
def peftplug_register_backends() -> Backend:
    """The ``torch`` backend, implemented in :mod:`peftplug.backends.torch.ops`."""
    return Backend(
        name="torch",
        implementation="peftplug.backends.torch.ops:TorchBackend",
        convention="hf",
        requires=("torch", "transformers"),
        extra="peftplug[torch]",
        recipe_runner="peftplug.backends.torch.recipe:run",
        model_builder="peftplug.backends.torch.app_models:MODELS",
        generator="peftplug.backends.torch.generate:generate",
        distributed_engines=("ddp", "fsdp"),
        launcher="peftplug.backends.torch.distributed_recipe:launch",
        test_driver="peftplug.backends.torch.testing:TorchDriver",
        description="PyTorch (torch.nn.Module models, transformers models)",
    )


@hookimpl
def peftplug_detect_backend(model: Any) -> str | None:
    """``"torch"`` for a ``torch.nn.Module``; never imports torch to find out."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    return None


@hookimpl
def peftplug_validate_config(config: Any, model: Any, backend: str) -> None:
    """On a base already sharded with ``fully_shard``: refuse, naming the field or module, what
    FSDP2 cannot take after sharding (``modules_to_save``; a second adapter on layers already
    adapted)."""
    if backend != "torch":
        return
    from peftplug.backends.torch.fsdp import refuse_after_sharding

    refuse_after_sharding(model, config)


@hookimpl
def peftplug_adapter_injected(model: Any, adapter_name: str, config: Any, wrapped: list[str]) -> None:
    """On a base already sharded with ``fully_shard``: make the new adapter layers FSDP2 units."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module) or not wrapped:
        return
    from peftplug.backends.torch.fsdp import is_fully_sharded, shard_adapter_layers

    base = model.base_model.model
    if is_fully_sharded(base):
        shard_adapter_layers(base, {name: base.get_submodule(name) for name in wrapped}, adapter_name)
