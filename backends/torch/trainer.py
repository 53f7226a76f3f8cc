"""Adapter files in ``transformers.Trainer`` checkpoints (see :mod:`peftplug.model.checkpoint_callback`)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from peftplug.model.checkpoint_callback import SavesAdaptersIntoCheckpoints


class AdapterCheckpointCallback(SavesAdaptersIntoCheckpoints, TrainerCallback):
    """Save every adapter of the peftplug model into each checkpoint ``Trainer`` writes.

    Pass it to ``Trainer(..., callbacks=[AdapterCheckpointCallback()])``. ``format`` is any
    registered format name (``"peft"`` by default).
    """

    @staticmethod
    def _unwrap(model: Any) -> Any:
        return getattr(model, "module", model)
