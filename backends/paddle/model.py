"""Paddle's PeftModel: the core's PeftModel mixed with ``paddle.nn.Layer``.

The tree is HF PEFT's: ``PaddlePeftModel.base_model`` is a :class:`TunerModel` whose ``model``
is the user's model, so parameter names are ``base_model.model.<path>.lora_A.default`` and saved
keys ``base_model.model.<path>.lora_A.weight``, whatever the framework.
"""

from __future__ import annotations

import inspect
from typing import Any

from paddle import nn

from peftplug.peft_model import PeftModel


class TunerModel(nn.Layer):
    """Holds the user's model as ``.model`` (HF PEFT's ``LoraModel`` position in the tree)."""

    def __init__(self, model: nn.Layer):
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the user's model."""
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("model", "_sub_layers", "_parameters", "_buffers"):
                raise
            return getattr(self.model, name)


class _BoundForward:
    """``peft_model.forward``: runs the user's model with the active adapter applied, and
    advertises the user's model's forward signature, so that PaddleNLP's ``Trainer`` keeps the
    dataset columns (input_ids, labels, ...) that the model accepts."""

    __slots__ = ("_peft_model",)

    def __init__(self, peft_model: PaddlePeftModel):
        self._peft_model = peft_model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        peft_model = self._peft_model
        if peft_model._prompt_learning and not peft_model._adapters_disabled:
            from peftplug.backends.paddle.prompt import prompt_forward

            return prompt_forward(peft_model, args, kwargs)
        return peft_model.base_model.model(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._peft_model.base_model.model.forward)


def _forward(self: PaddlePeftModel, *args: Any, labels: Any = None, **kwargs: Any) -> Any:
    """Run the user's model with the active adapter applied."""
    if labels is not None:
        kwargs["labels"] = labels
    return _BoundForward(self)(*args, **kwargs)


class _ForwardDescriptor:
    """``forward`` as a class attribute: each instance gets a :class:`_BoundForward` (no
    per-instance state, so copies stay correct); the class gets a plain function."""

    def __get__(self, instance: PaddlePeftModel | None, owner: type) -> Any:
        return _forward if instance is None else _BoundForward(instance)


class PaddlePeftModel(PeftModel, nn.Layer):
    """A Paddle model with adapters: a ``paddle.nn.Layer`` (so PaddleNLP's ``Trainer`` takes it)
    that forwards unknown attributes (``config``, ``generate``, ...) to the user's model.

    With a prompt-learning adapter it also holds the prompt encoders, where
    :mod:`peftplug.backends.paddle.prompt` attaches them, and ``forward`` / ``generate`` add the
    active adapter's virtual tokens.
    """

    forward = _ForwardDescriptor()
    _prompt_learning = False  # set when a prompt encoder is attached

    def __init__(self, model: nn.Layer, ops: Any, method: Any):
        nn.Layer.__init__(self)
        self.base_model = TunerModel(model)
        self.training = model.training
        self._init_peft(ops, method)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The user's model's ``generate``, with the active adapter applied (for prompt-learning
        methods: its virtual tokens, which the output never contains)."""
        if self._prompt_learning and not self._adapters_disabled:
            from peftplug.backends.paddle.prompt import prompt_generate

            return prompt_generate(self, args, kwargs)
        return self.base_model.model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "_peft_ops", "_sub_layers", "_parameters", "_buffers"):
                raise
            return getattr(self.base_model, name)
