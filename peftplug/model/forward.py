"""``PeftModel.forward``, written once for every backend.

``forward`` is a class attribute (:class:`ForwardDescriptor`), not a method, for two reasons:
``Trainer`` (transformers' and PaddleNLP's) keeps only the dataset columns that
``inspect.signature(model.forward)`` names, so an instance's ``forward`` must advertise the
user's model's signature; and nothing may be stored per instance, so ``copy.deepcopy`` and
pickling of the model stay correct.
"""

from __future__ import annotations

import inspect
from typing import Any

from peftplug.model.mixed_batch import adapter_per_row, row_adapters


class BoundForward:
    """``peft_model.forward``: runs the user's model with the active adapter applied (for
    prompt-learning methods, with its virtual tokens; with ``adapter_names=``, one adapter per
    row: :mod:`peftplug.model.mixed_batch`), and advertises the user's model's forward signature."""

    __slots__ = ("_peft_model",)

    def __init__(self, peft_model: Any):
        self._peft_model = peft_model

    def __call__(self, *args: Any, adapter_names: list[str] | None = None, **kwargs: Any) -> Any:
        peft_model = self._peft_model
        if adapter_names is not None:
            with adapter_per_row(peft_model, row_adapters(peft_model, adapter_names)):
                return peft_model.base_model(*args, **kwargs)
        if peft_model._prompt_learning and not peft_model._adapters_disabled:
            return peft_model._prompt_forward(args, kwargs)
        return peft_model.base_model(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._peft_model.get_base_model().forward)


def forward_with_labels(self: Any, *args: Any, labels: Any = None, **kwargs: Any) -> Any:
    """Run the user's model with the active adapter applied (``PeftModel.forward`` seen on the
    class: its ``labels`` parameter tells ``Trainer`` where the labels go, as HF PEFT's does)."""
    if labels is not None:
        kwargs["labels"] = labels
    return BoundForward(self)(*args, **kwargs)


class ForwardDescriptor:
    """``forward`` as a class attribute: each instance gets a :class:`BoundForward`, the class
    :func:`forward_with_labels`."""

    def __get__(self, instance: Any, owner: type) -> Any:
        return forward_with_labels if instance is None else BoundForward(instance)
