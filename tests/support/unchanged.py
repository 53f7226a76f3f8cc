"""What a refused call must leave as it found: the files of some folders, and a model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def files_of(*folders: Path) -> dict[str, bytes]:
    """``{path: bytes}`` of every file under ``folders`` (hidden ones included)."""
    return {str(path): path.read_bytes() for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


def model_snapshot(model) -> tuple[str, dict[str, np.ndarray]]:
    """A torch or Paddle model's structure (its repr) and every value of its state dict."""

    def values(tensor) -> np.ndarray:
        tensor = tensor.detach().cpu() if hasattr(tensor, "cpu") and hasattr(tensor, "detach") else tensor
        return np.array(tensor.float().numpy() if str(tensor.dtype).endswith("bfloat16") else tensor.numpy())

    return repr(model), {name: values(tensor) for name, tensor in model.state_dict().items()}


@contextlib.contextmanager
def left_as_it_was(*folders: Path, model=None) -> Iterator[None]:
    """Assert that the block changes no file under ``folders`` and nothing of ``model``."""
    files_before = files_of(*folders)
    model_before = model_snapshot(model) if model is not None else None
    yield
    assert files_of(*folders) == files_before, "the files changed"
    if model is not None:
        structure, values = model_snapshot(model)
        assert structure == model_before[0], "the model's modules changed"
        assert values.keys() == model_before[1].keys(), "the model's parameters changed"
        for name, value in values.items():
            np.testing.assert_array_equal(value, model_before[1][name], err_msg=name)
