"""Adapter files in PaddleNLP ``Trainer`` checkpoints (see :mod:`peftplug.model.checkpoint_callback`).

PaddleNLP's ``Trainer`` gives a model that is not a ``PretrainedModel`` a bare
``model_state.pdparams`` of its whole state dict (base weights included); the callback adds
the adapter files beside it.
"""

from __future__ import annotations

from typing import Any

from paddlenlp.trainer import TrainerCallback

from peftplug.model.checkpoint_callback import SavesAdaptersIntoCheckpoints


class AdapterCheckpointCallback(SavesAdaptersIntoCheckpoints, TrainerCallback):
    """Save every adapter of the peftplug model into each checkpoint PaddleNLP's ``Trainer`` writes.

    Pass it to ``Trainer(..., callbacks=[AdapterCheckpointCallback()])``. ``format`` is any
    registered format name (``"peft"`` by default).
    """

    @staticmethod
    def _unwrap(model: Any) -> Any:
        return getattr(model, "_layers", None) or model
