"""Adapter files in ``transformers.Trainer`` checkpoints (see :mod:`peftplug.model.checkpoint_callback`).

No longer needed: Trainer saves a peftplug model's adapter itself
(:mod:`peftplug.backends.torch.trainer_support`). Kept for scripts that pass it, with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from peftplug.model.checkpoint_callback import SavesAdaptersIntoCheckpoints


class AdapterCheckpointCallback(SavesAdaptersIntoCheckpoints, TrainerCallback):
    """Save every adapter of the peftplug model into each checkpoint ``Trainer`` writes.

    Deprecated: ``Trainer`` now writes the adapter files into each checkpoint by itself. With
    ``format="peft"`` this rewrites the same files; another registered format adds its files.
    """

    def __init__(self, format: str = "peft"):
        warnings.warn(
            "AdapterCheckpointCallback is no longer needed: transformers.Trainer saves a peftplug model's adapter "
            "into each checkpoint by itself. Remove it from callbacks=[...]",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(format)

    @staticmethod
    def _unwrap(model: Any) -> Any:
        return getattr(model, "module", model)
