"""Adapter files in a Trainer's checkpoints, for transformers' and PaddleNLP's ``Trainer`` alike.

Both Trainers save their own library's adapter models (HF PEFT's ``PeftModel``, PaddleNLP's
``LoRAModel`` ...) with ``save_pretrained`` because they recognise them by class; any other
model gets a bare state dict of all its weights. :class:`SavesAdaptersIntoCheckpoints` writes
the adapter next to it, so a ``checkpoint-500`` directory loads with
:meth:`peftplug.PeftModel.from_pretrained`, as HF PEFT tutorials load theirs. Each backend mixes
it with its Trainer's callback class.
"""

from __future__ import annotations

import os
from typing import Any

from peftplug.model.peft_model import PeftModel


class SavesAdaptersIntoCheckpoints:
    """``on_save``: write every adapter of the peftplug model into the checkpoint just written.

    ``format`` is any registered format name (``"peft"`` by default).
    """

    def __init__(self, format: str = "peft"):
        self.format = format

    @staticmethod
    def _unwrap(model: Any) -> Any:
        """The model inside the Trainer's data-parallel wrapper, if any."""
        return model

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Write the adapter files into ``<output_dir>/checkpoint-<step>`` on the main process."""
        if not state.is_world_process_zero:
            return
        peft_model = self._unwrap(model)
        if not isinstance(peft_model, PeftModel):
            raise TypeError(f"AdapterCheckpointCallback needs a peftplug model, got {type(peft_model).__name__}")
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        peft_model.save_pretrained(checkpoint, format=self.format)
