"""Hostile and broken safetensors files: every header the safetensors library refuses (overlaps,
holes, sizes that dtype x shape do not give, lists, missing offsets, unknown dtypes, trailing or
missing bytes) is refused by peftplug's reader with an error naming the file and the tensor, and
``from_pretrained`` refuses it before the model or the folder changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save
from unchanged import left_as_it_was

import peftplug
from peftplug.errors import AdapterLoadError
from peftplug.plugins.formats.safetensors_io import read_safetensors


def forged_safetensors(path, edit) -> None:
    """Write a two-tensor safetensors file whose header ``edit`` changes (bytes left as written)."""
    import json
    import struct

    raw = save({"a": np.arange(4, dtype=np.float32), "b": np.ones((2, 2), dtype=np.float32)})
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = raw[8 + size :]
    header, body = edit(header, body)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


FORGERIES = {
    "overlapping": (
        lambda h, b: ({**h, "b": {**h["b"], "data_offsets": h["a"]["data_offsets"]}}, b),
        r"'b' \(bytes 0..16\) overlaps",
    ),
    "a hole": (lambda h, b: ({**h, "a": {**h["a"], "data_offsets": [0, 8], "shape": [2]}}, b), r"'b'.*unused"),
    "size not dtype x shape": (lambda h, b: ({**h, "a": {**h["a"], "shape": [3]}}, b), r"'a': 16 bytes do not hold"),
    "a list header": (lambda h, b: ([h["a"]], b), r"header is a list"),
    "no data_offsets": (lambda h, b: ({**h, "a": {"dtype": "F32", "shape": [4]}}, b), r"'a': its entry"),
    "an unknown dtype": (lambda h, b: ({**h, "a": {**h["a"], "dtype": "F8_E9"}}, b), r"'a' has dtype 'F8_E9'"),
    "trailing bytes": (lambda h, b: (h, b + b"\0" * 8), r"8 bytes after the last tensor"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_header_is_refused_naming_file_and_tensor(tmp_path, forgery):
    """The safetensors library refuses these headers; so does peftplug's reader, by name."""
    edit, said = FORGERIES[forgery]
    path = tmp_path / "adapter_model.safetensors"
    forged_safetensors(path, edit)
    with left_as_it_was(tmp_path), pytest.raises(AdapterLoadError, match=said) as error:
        read_safetensors(path)
    assert str(path) in str(error.value)


@pytest.fixture
def saved(make_model, tmp_path):
    """A saved LoRA adapter of the tiny Llama (its two tensors in one safetensors file)."""
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def forge_saved(weights: Path, edit) -> None:
    """Apply a header ``edit`` of :data:`FORGERIES` to a saved adapter's own weights file."""
    import json
    import struct

    raw = weights.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header, body = edit(json.loads(raw[8 : 8 + size]), raw[8 + size :])
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + body)


SAVED_FORGERIES = {
    "overlapping": lambda h, b: (_overlap_first_two(h), b),
    "a list header": lambda h, b: ([v for k, v in h.items() if k != "__metadata__"], b),
    "an unknown dtype": lambda h, b: (
        {k: ({**v, "dtype": "F8_E9"} if k != "__metadata__" else v) for k, v in h.items()},
        b,
    ),
    "trailing bytes": lambda h, b: (h, b + b"\0" * 8),
    "truncated": lambda h, b: (h, b[:-100]),
}


def _overlap_first_two(header: dict) -> dict:
    first, second = sorted(k for k in header if k != "__metadata__")[:2]
    return {**header, second: {**header[second], "data_offsets": header[first]["data_offsets"]}}


@pytest.mark.parametrize("forgery", sorted(SAVED_FORGERIES))
def test_from_pretrained_refuses_a_forged_file_before_the_model_changes(make_model, saved, forgery):
    weights = saved / "adapter_model.safetensors"
    forge_saved(weights, SAVED_FORGERIES[forgery])
    base = make_model("llama")
    with left_as_it_was(saved, model=base), pytest.raises(AdapterLoadError) as error:
        peftplug.PeftModel.from_pretrained(base, saved)
    assert "adapter_model.safetensors" in str(error.value)
