"""The adapters a Trainer checkpoint holds, loaded back into the model that trains them.

A Trainer that resumes (``resume_from_checkpoint``) or keeps the best checkpoint
(``load_best_model_at_end``) must put the saved tensors into the adapters it is training, whose
parameters its optimizer holds: this copies them in place, adapter by adapter, as
``save_pretrained`` laid them out (``default`` in the checkpoint, the others in subfolders named
after them). Framework-free: each backend's Trainer support calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftplug.adapter_io import read_adapter
from peftplug.errors import AdapterLoadError
from peftplug.interop.cross_framework import format_of, state_for_model
from peftplug.manager import get_plugin_manager
from peftplug.model.peft_model import DEFAULT_ADAPTER


def load_checkpoint_adapters(peft_model: Any, checkpoint: str | Path) -> list[str]:
    """Copy every adapter saved in ``checkpoint`` into the adapter of the same name of
    ``peft_model``, in place; returns the names loaded. A checkpoint holding none of the model's
    adapters is an error naming the directory and the adapters looked for."""
    manager = get_plugin_manager()
    loaded = []
    for name in peft_model.peft_config:
        directory = Path(checkpoint) / ("" if name == DEFAULT_ADAPTER else name)
        if not directory.is_dir() or not any(found.detect(directory) for found in manager.formats):
            continue
        state = read_adapter(directory, None)
        state = state_for_model(state, peft_model.base_model.model, format_of(directory, None))
        peft_model.load_adapter_state(state, name)
        loaded.append(name)
    if not loaded:
        raise AdapterLoadError(
            f"checkpoint {str(checkpoint)!r} holds none of the model's adapters ({', '.join(peft_model.peft_config)})"
        )
    return loaded
