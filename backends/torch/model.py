"""PyTorch's PeftModel: the core's PeftModel mixed with ``torch.nn.Module``.

The tree is HF PEFT's: ``TorchPeftModel.base_model`` is a :class:`TunerModel` whose ``model``
is the user's model, so parameter names (``base_model.model.<path>.lora_A.default.weight``)
and counts match HF PEFT's exactly.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

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


class TorchPeftModel(PeftModel, nn.Module):
    """A torch model with adapters: a ``torch.nn.Module`` (so ``Trainer`` takes it) that
    forwards unknown attributes (``config``, ``generate``, ...) to the user's model."""

    def __init__(self, model: nn.Module, ops: Any, method: Any, manager: Any):
        nn.Module.__init__(self)
        self.base_model = TunerModel(model)
        self._init_peft(ops, method, manager)
        # Trainer drops dataset columns that forward() does not name; expose the base model's
        # forward signature on this instance so input_ids, labels, ... survive.
        try:
            signature = inspect.signature(model.forward)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            def forward(*args: Any, **kwargs: Any) -> Any:
                return self._forward_to_base(*args, **kwargs)

            forward.__signature__ = signature
            forward.__doc__ = self._forward_to_base.__doc__
            self.forward = forward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the user's model with the active adapter applied."""
        return self._forward_to_base(*args, **kwargs)

    def _forward_to_base(self, *args: Any, **kwargs: Any) -> Any:
        """Run the user's model with the active adapter applied."""
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The user's model's ``generate``, with the active adapter applied."""
        return self.base_model.model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "_peft_ops"):
                raise
            return getattr(self.base_model, name)
