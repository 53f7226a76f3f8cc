"""What the tests of ``peftplug.paddlenlp`` share: the two libraries one test body runs against
(peftplug's PaddleNLP API and PaddleNLP's own ``paddlenlp.peft``), and filling a PEFT model's
trainable tensors with the same values in both, so that their outputs can be compared."""

from __future__ import annotations

import importlib

import numpy as np

# The import a PaddleNLP script changes: the same test runs with each.
LIBRARIES = ("peftplug.paddlenlp", "paddlenlp.peft")


def library(name: str):
    """The module ``from <name> import LoRAModel, ...`` reads."""
    return importlib.import_module(name)


def fill_trainable(paddle, peft_model, seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    """Set every trainable tensor (by its PaddleNLP name) to seeded random values; returns them."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, tensor in sorted(peft_model.get_trainable_state_dict().items()):
        values[name] = (rng.standard_normal(tensor.shape) * scale).astype("float32")
        with paddle.no_grad():
            tensor.set_value(paddle.to_tensor(values[name]))
    return values


def trainable_names(peft_model) -> set[str]:
    """The names (PaddleNLP's) of the tensors left trainable."""
    return set(peft_model.get_trainable_state_dict())


def prefix_hooks(name: str):
    """The module the library's prefix hooks (``llama_postprocess_past_key_value``) come from:
    PaddleNLP keeps them in ``paddlenlp.peft.prefix``, peftplug beside the classes."""
    return importlib.import_module("paddlenlp.peft.prefix" if name == "paddlenlp.peft" else name)
