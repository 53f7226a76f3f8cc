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
