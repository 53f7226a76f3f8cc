"""PyTorch's PeftModel: the core's PeftModel mixed with ``torch.nn.Module``.

The tree is HF PEFT's: ``TorchPeftModel.base_model`` is a :class:`TunerModel` whose ``model``
is the user's model, so parameter names (``base_model.model.<path>.lora_A.default.weight``)
and counts match HF PEFT's exactly.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from peftplug.backends.torch.prompt import prepare_inputs_for_generation, prompt_forward, prompt_generate
from peftplug.peft_model import PeftModel


class TunerModel(nn.Module):
    """Holds the user's model as ``.model`` (HF PEFT's ``LoraModel`` position in the tree)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the user's model."""
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)


class _BoundForward:
    """``peft_model.forward``: runs the user's model with the active adapter applied, and
    advertises the user's model's forward signature, so that ``Trainer`` keeps the dataset
    columns (input_ids, labels, token_type_ids, ...) that the model accepts."""

    __slots__ = ("_peft_model",)

    def __init__(self, peft_model: TorchPeftModel):
        self._peft_model = peft_model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        peft_model = self._peft_model
        if peft_model._prompt_learning and not peft_model._adapters_disabled:
            return prompt_forward(peft_model, args, kwargs)
        return peft_model.base_model(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._peft_model.base_model.model.forward)


def _forward(self: TorchPeftModel, *args: Any, labels: Any = None, **kwargs: Any) -> Any:
    """Run the user's model with the active adapter applied."""
    if labels is not None:
        kwargs["labels"] = labels
    return self.base_model(*args, **kwargs)


class _ForwardDescriptor:
    """``forward`` as a class attribute: each instance gets a :class:`_BoundForward` (no
    per-instance state, so copies and pickles stay correct); the class gets a function whose
    ``labels`` parameter tells ``Trainer`` where the labels go, as HF PEFT's forward does."""

    def __get__(self, instance: TorchPeftModel | None, owner: type) -> Any:
        return _forward if instance is None else _BoundForward(instance)


class TorchPeftModel(PeftModel, nn.Module):
    """A torch model with adapters: a ``torch.nn.Module`` (so ``Trainer`` takes it) that
    forwards unknown attributes (``config``, ``generate``, ...) to the user's model.

    With a prompt-learning adapter it also holds ``prompt_encoder`` (an ``nn.ModuleDict`` of
    encoders by adapter name) and ``word_embeddings`` (a reference to the user's model's input
    embeddings), where HF PEFT holds them, and ``forward`` / ``generate`` add the active
    adapter's virtual tokens (see :mod:`peftplug.backends.torch.prompt`).
    """

    forward = _ForwardDescriptor()
    _prompt_learning = False  # set by TorchBackend.attach_prompt_encoder

    def __init__(self, model: nn.Module, ops: Any, method: Any):
        nn.Module.__init__(self)
        self.base_model = TunerModel(model)
        self._init_peft(ops, method)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The user's model's ``generate``, with the active adapter applied (for prompt-learning
        methods: its virtual tokens, which the output never contains)."""
        if self._prompt_learning and not self._adapters_disabled:
            return prompt_generate(self, args, kwargs)
        return self.base_model.model.generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> Any:
        """The user's model's ``prepare_inputs_for_generation``; for prompt-learning methods
        with the virtual tokens added where the step needs them, as HF PEFT does."""
        model = self.base_model.model
        original = type(model).prepare_inputs_for_generation.__get__(model, type(model))
        if self._prompt_learning and not self._adapters_disabled:
            return prepare_inputs_for_generation(self, original, args, kwargs)
        return original(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "_peft_ops"):
                raise
            return getattr(self.base_model, name)
