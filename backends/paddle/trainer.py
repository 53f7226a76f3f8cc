"""Adapter files in PaddleNLP ``Trainer`` checkpoints.

PaddleNLP's ``Trainer`` saves its own ``LoRAModel`` / ``PrefixModelForCausalLM`` with their
``save_pretrained`` because it recognises them by class; any other model that is not a
``PretrainedModel`` gets a bare ``model_state.pdparams`` of its whole state dict (base weights
included). :class:`AdapterCheckpointCallback` writes the adapter next to it, so a
``checkpoint-500`` directory loads with :meth:`peftplug.PeftModel.from_pretrained`.
"""

from __future__ import annotations

import os
from typing import Any

from paddlenlp.trainer import TrainerCallback

from peftplug.peft_model import PeftModel


class AdapterCheckpointCallback(TrainerCallback):
    """Save every adapter of the peftplug model into each checkpoint PaddleNLP's ``Trainer`` writes.

    Pass it to ``Trainer(..., callbacks=[AdapterCheckpointCallback()])``. ``format`` is any
    registered format name (``"peft"`` by default).
    """

    def __init__(self, format: str = "peft"):
        self.format = format

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Write the adapter files into ``<output_dir>/checkpoint-<step>`` on the main process."""
        if not state.is_world_process_zero:
            return
        peft_model = getattr(model, "_layers", None) or model
        if not isinstance(peft_model, PeftModel):
            raise TypeError(f"AdapterCheckpointCallback needs a peftplug model, got {type(peft_model).__name__}")
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        peft_model.save_pretrained(checkpoint, format=self.format)
