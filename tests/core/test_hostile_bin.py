"""Hostile and broken ``adapter_model.bin`` files (pickles, read by torch's weights-only loader):
a payload that would run code runs nothing, a value that is not a tensor and a cut-off file are
errors naming the file (and the key), raised before the model or the folder changes."""

from __future__ import annotations

import pickle

import pytest
from unchanged import left_as_it_was

import peftplug
from peftplug.errors import AdapterLoadError


@pytest.fixture
def saved(make_model, tmp_path):
    """A LoRA adapter of the tiny Llama saved as ``adapter_model.bin``."""
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter", safe_serialization=False)
    return tmp_path / "adapter"


class Payload:
    """Unpickled by a full unpickler, it creates the file it names."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def refuse(make_model, saved, said):
    base = make_model("llama")
    with left_as_it_was(saved, model=base), pytest.raises(AdapterLoadError, match=said):
        peftplug.PeftModel.from_pretrained(base, saved)


def test_a_value_that_is_not_a_tensor_is_named_with_its_key(torch, make_model, saved):
    weights = saved / "adapter_model.bin"
    state = torch.load(weights)
    key = sorted(state)[0]
    torch.save({**state, key: "not a tensor"}, weights)
    refuse(make_model, saved, rf"adapter_model\.bin: '{key}' is a str, not a tensor")


def test_a_pickled_payload_runs_nothing(torch, make_model, saved, tmp_path):
    weights = saved / "adapter_model.bin"
    marker = tmp_path / "ran"
    torch.save({**torch.load(weights), "payload": Payload(marker)}, weights, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    refuse(make_model, saved, r"adapter_model\.bin")
    assert not marker.exists()


def test_a_cut_off_file_is_named(torch, make_model, saved):
    weights = saved / "adapter_model.bin"
    weights.write_bytes(weights.read_bytes()[:-64])
    refuse(make_model, saved, r"adapter_model\.bin")
