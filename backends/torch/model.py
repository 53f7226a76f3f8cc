"""PyTorch's PeftModel: the core's PeftModel mixed with ``torch.nn.Module``.

The tree is HF PEFT's: ``TorchPeftModel.base_model`` is a :class:`TunerModel` whose ``model``
is the user's model, so parameter names (``base_model.model.<path>.lora_A.default.weight``)
and counts match HF PEFT's exactly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peftplug.backends.torch.prompt import prepare_inputs_for_generation, prompt_forward, prompt_generate
from peftplug.model.peft_model import PeftModel
from peftplug.model.tuner import TunerModelBase


class TunerModel(TunerModelBase, nn.Module):
    """HF PEFT's tuner (``LoraModel``'s place in the tree): the user's model as ``.model``, and the
    adapter methods of :class:`~peftplug.model.tuner.TunerModelBase`."""


class TorchPeftModel(PeftModel, nn.Module):
    """A torch model with adapters: a ``torch.nn.Module`` (so ``Trainer`` takes it) that
    forwards unknown attributes (``config``, ``generate``, ...) to the user's model.

    With a prompt-learning adapter it also holds ``prompt_encoder`` (an ``nn.ModuleDict`` of
    encoders by adapter name) and ``word_embeddings`` (a reference to the user's model's input
    embeddings), where HF PEFT holds them, and ``forward`` / ``generate`` add the active
    adapter's virtual tokens (see :mod:`peftplug.backends.torch.prompt`).
    """

    def __init__(self, model: nn.Module, ops: Any, method: Any):
        nn.Module.__init__(self)
        self.base_model = TunerModel(model)
        self._init_peft(ops, method)

    def _prompt_forward(self, args: tuple, kwargs: dict) -> Any:
        return prompt_forward(self, args, kwargs)

    def _prompt_generate(self, args: tuple, kwargs: dict) -> Any:
        return prompt_generate(self, args, kwargs)

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> Any:
        """The user's model's ``prepare_inputs_for_generation``; for prompt-learning methods
        with the virtual tokens added where the step needs them, as HF PEFT does."""
        model = self.base_model.model
        original = type(model).prepare_inputs_for_generation.__get__(model, type(model))
        if self._prompt_learning and not self._adapters_disabled:
            return prepare_inputs_for_generation(self, original, args, kwargs)
        return original(*args, **kwargs)
