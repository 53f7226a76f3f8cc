"""Per-backend test drivers: a tiny model, a batch, logits as numpy, a few training steps.

The contract tests (:mod:`peftplug.testing.contract`) speak only to a :class:`Driver`, so one
test body runs on every backend a method claims. A backend declares its driver on its
registration (``Backend.test_driver``, ``"module:Class"``); frameworks are imported when a driver
is used, never when this module is imported.
"""

from __future__ import annotations

import copy
import importlib.util
from functools import cache
from typing import Any

import numpy as np

VOCAB = 128


class Driver:
    """What a contract test needs from one framework. Subclasses implement each method."""

    name: str = ""
    requires: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why this backend cannot run here (a package is not installed), or None."""
        absent = [module for module in self.requires if importlib.util.find_spec(module) is None]
        return f"backend {self.name!r} needs {', '.join(absent)}, not installed" if absent else None

    def tiny_model(self, family: str = "llama") -> Any:
        """A tiny causal LM of ``family`` (hidden 32, 2 layers, vocabulary 128, untied
        embeddings), the same random weights every call, in eval mode."""
        raise NotImplementedError

    def copy(self, model: Any) -> Any:
        """An independent deep copy of ``model``."""
        return copy.deepcopy(model)

    def inputs(self) -> dict[str, Any]:
        """A fixed batch (2 x 7 token ids) for the tiny models."""
        raise NotImplementedError

    def logits(self, model: Any, inputs: dict[str, Any]) -> np.ndarray:
        """The model's logits for ``inputs`` as float32 numpy, without gradients."""
        raise NotImplementedError

    def train_steps(self, model: Any, inputs: dict[str, Any], steps: int = 3, lr: float = 1e-2) -> None:
        """A few AdamW steps on the trainable parameters (loss: mean of the logits squared), then eval mode."""
        raise NotImplementedError

    def named_arrays(self, model: Any, trainable: bool | None = None) -> dict[str, np.ndarray]:
        """Parameters as numpy copies by name; only trainable (True) or frozen (False) ones when asked."""
        raise NotImplementedError


def fixed_ids() -> np.ndarray:
    """The token ids of every driver's batch (2 x 7, seeded)."""
    return np.random.default_rng(1).integers(3, VOCAB, size=(2, 7))


@cache
def get_driver(backend: str) -> Driver:
    """The driver the registered backend ``backend`` declares; an error naming the backends
    that declare one otherwise."""
    from peftplug.manager import get_plugin_manager
    from peftplug.registration import load_declared

    backends = get_plugin_manager().backends
    spec = backends.get(backend).test_driver if backend in backends else None
    if spec is None:
        known = ", ".join(b.name for b in backends if b.test_driver)
        raise KeyError(f"peftplug.testing has no driver for backend {backend!r}; backends with one: {known}")
    return load_declared(spec, backend)()
