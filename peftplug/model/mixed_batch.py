"""Mixed batches: one adapter per row of a batch, HF PEFT's ``adapter_names=`` argument.

``model(**inputs, adapter_names=["a", "b", "__base__", ...])`` and the same keyword on
``generate`` run row ``i`` with adapter ``adapter_names[i]`` alone (``"__base__"``: the base model),
as if each row ran by itself with that adapter active. For the call, every adapter layer's
``forward`` is its :meth:`~peftplug.backend.AdapterLayer.mixed_batch_forward` with the row
assignment bound; a method's layer may batch its adapters into one product (LoRA's does), the
backend's base layer otherwise runs each adapter's rows as one sub-batch.

As in HF PEFT: inference only (a model in training mode is refused), names must be adapters the
model holds, merged adapters are refused by the layers, and with beam search (``num_beams``) each
name is repeated for its row's beams.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

BASE_ROW = "__base__"


def row_adapters(peft_model: Any, adapter_names: Any, num_beams: Any = None) -> list[str]:
    """``adapter_names`` checked against ``peft_model`` (a list of adapter names it holds or
    ``"__base__"``), repeated ``num_beams`` times per row under beam search."""
    if not isinstance(adapter_names, (list, tuple)) or not all(isinstance(n, str) for n in adapter_names):
        raise TypeError(f"adapter_names must be a list of adapter names, one per row; got {adapter_names!r}")
    if peft_model._prompt_learning:
        raise ValueError(
            f"adapter_names: a batch of several adapters needs adapters inside the model's layers; "
            f"{peft_model.active_adapter!r} is a prompt-learning adapter"
        )
    if getattr(peft_model.base_model.model, "training", False):
        raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
    held = set(peft_model.peft_config)  # every adapter the model holds has its config there
    unknown = sorted({n for n in adapter_names if n != BASE_ROW} - held)
    if unknown:
        raise ValueError(
            f"Trying to infer with non-existing adapter(s): {', '.join(unknown)} "
            f"(this model holds {', '.join(sorted(held)) or 'none'}; {BASE_ROW!r} runs a row on the base model)"
        )
    if isinstance(num_beams, int) and num_beams > 1:
        return [name for name in adapter_names for _ in range(num_beams)]
    return list(adapter_names)


@contextlib.contextmanager
def adapter_per_row(peft_model: Any, names: list[str]) -> Iterator[None]:
    """For the duration of the block, every adapter layer of ``peft_model`` runs row ``i`` of
    its input with adapter ``names[i]``."""
    layers = [layer for _, layer in peft_model._adapter_layers()]
    try:
        for layer in layers:
            layer.forward = functools.partial(layer.mixed_batch_forward, names)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
            layer.end_mixed_batch()
