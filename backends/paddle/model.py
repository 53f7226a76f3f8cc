"""Paddle's PeftModel: the core's PeftModel mixed with ``paddle.nn.Layer``.

The tree is HF PEFT's: ``PaddlePeftModel.base_model`` is a :class:`TunerModel` whose ``model``
is the user's model, so parameter names are ``base_model.model.<path>.lora_A.default`` and saved
keys ``base_model.model.<path>.lora_A.weight``, whatever the framework.
"""

from __future__ import annotations

from typing import Any

from paddle import nn

from peftplug.model.peft_model import PeftModel
from peftplug.model.tuner import TunerModelBase


class TunerModel(TunerModelBase, nn.Layer):
    """HF PEFT's tuner (``LoraModel``'s place in the tree): the user's model as ``.model``, and the
    adapter methods of :class:`~peftplug.model.tuner.TunerModelBase`."""


class PaddlePeftModel(PeftModel, nn.Layer):
    """A Paddle model with adapters: a ``paddle.nn.Layer`` (so PaddleNLP's ``Trainer`` takes it)
    that forwards unknown attributes (``config``, ``generate``, ...) to the user's model.

    With a prompt-learning adapter it also holds the prompt encoders, where
    :mod:`peftplug.backends.paddle.prompt` attaches them, and ``forward`` / ``generate`` add the
    active adapter's virtual tokens.
    """

    def __init__(self, model: nn.Layer, ops: Any, method: Any):
        nn.Layer.__init__(self)
        self.base_model = TunerModel(model)
        self.training = model.training
        self._init_peft(ops, method)

    def _prompt_forward(self, args: tuple, kwargs: dict) -> Any:
        from peftplug.backends.paddle.prompt import prompt_forward

        return prompt_forward(self, args, kwargs)

    def _prompt_generate(self, args: tuple, kwargs: dict) -> Any:
        from peftplug.backends.paddle.prompt import prompt_generate

        return prompt_generate(self, args, kwargs)
