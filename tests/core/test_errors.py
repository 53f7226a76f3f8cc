"""Bad input: each case gets an error naming the thing at fault, and nothing on disk is lost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch_lm import logits_of, model_inputs

import peftplug
from peftplug.errors import AdapterLoadError, AdapterShapeError, ConfigError, PeftplugError, TargetModulesError


def test_a_target_that_matches_nothing_lists_similar_names(make_model):
    with pytest.raises(TargetModulesError) as error:
        peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=["q_prj", "v_prj"]))
    message = str(error.value)
    assert "['q_prj', 'v_prj'] matched no module" in message and "q_proj" in message and "v_proj" in message


def test_a_regex_that_matches_nothing_is_an_error(make_model):
    with pytest.raises(
        TargetModulesError, match="matched no module of the base model. Some module names in the model: act_fn"
    ):
        peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=r".*\.attn\.q"))


def test_layers_to_transform_outside_the_model_is_an_error(make_model):
    with pytest.raises(TargetModulesError, match="within layers \\[7\\]"):
        peftplug.get_peft_model(
            make_model("llama"), peftplug.LoraConfig(target_modules=["q_proj"], layers_to_transform=[7])
        )


def test_a_model_family_without_defaults_asks_for_targets(torch):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="target_modules=None.*no default targets for model_type None"):
        peftplug.get_peft_model(model, peftplug.LoraConfig())


def test_a_target_of_an_unsupported_type_names_module_and_type(make_model):
    with pytest.raises(PeftplugError, match=r"module 'model.norm' \(LlamaRMSNorm\) matched target_modules"):
        peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=["norm"]))


def test_a_tensor_of_the_wrong_shape_names_it_and_both_shapes(make_model, tmp_path):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=4))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 2
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterShapeError) as error:
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    assert "lora_A.weight" in str(error.value) and "[4, 32]" in str(error.value) and "[2, 32]" in str(error.value)


def test_an_adapter_of_another_model_is_refused(make_model, tmp_path):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=4))
    state = model.adapter_state()
    state.tensors = {k.replace("model.layers", "transformer.h"): v for k, v in state.tensors.items()}
    from peftplug.adapter_io import write_adapter

    write_adapter(state, tmp_path)
    with pytest.raises(AdapterLoadError, match="none of the adapter's 8 tensors matches this model"):
        model.load_adapter(tmp_path, adapter_name="foreign")


def test_a_directory_without_an_adapter_is_a_clear_error(make_model, tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(
        AdapterLoadError, match="no registered format recognises the files in .*notes.txt.*known formats: .*peft"
    ):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    with pytest.raises(AdapterLoadError, match="does not exist"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path / "missing")


def test_unknown_adapter_names_list_the_known_ones(make_model):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig())
    with pytest.raises(PeftplugError, match="no adapter named 'other'; this model has: default"):
        model.set_adapter("other")
    with pytest.raises(ConfigError, match="adapter_name='default'"):
        model.add_adapter("default", peftplug.LoraConfig())


def test_an_interrupted_save_leaves_the_previous_adapter_readable(torch, make_model, tmp_path, monkeypatch):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(init_lora_weights=False))
    model.save_pretrained(tmp_path)
    inputs = model_inputs(torch, "llama")
    saved_logits = logits_of(torch, model, inputs)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(1.0)

    from peftplug import files as peftplug_files

    real_fsync = peftplug_files.os.fsync
    written = []

    def crash_on_second_file(fd):
        written.append(fd)
        if len(written) == 2:
            raise KeyboardInterrupt("power cut")
        real_fsync(fd)

    monkeypatch.setattr(peftplug_files.os, "fsync", crash_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "old files intact, no temp files"
    reloaded = peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    assert torch.equal(logits_of(torch, reloaded, inputs), saved_logits)


def test_saving_keeps_other_files_in_the_directory(make_model, tmp_path):
    (tmp_path / "trainer_state.json").write_text("{}")
    peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig()).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "trainer_state.json",
    ]


def test_bfloat16_safetensors_are_read_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from peftplug.plugins.formats.safetensors_io import read_safetensors

    values = torch.randn(3, 5).to(torch.bfloat16)
    save_file({"x": values, "y": torch.arange(4, dtype=torch.int64)}, tmp_path / "t.safetensors")
    read = read_safetensors(tmp_path / "t.safetensors")
    assert np.array_equal(read["x"], values.float().numpy()) and read["y"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("dropped", ["lora_A", "lora_B"])
def test_a_module_missing_one_of_its_tensors_is_named(make_model, tmp_path, dropped):
    """lora_B without lora_A would keep a fresh random A beside the trained B: refused, naming
    the missing tensor (HF PEFT only warns of missing keys)."""
    from safetensors.numpy import load_file, save_file

    peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=["q_proj"])).save_pretrained(
        tmp_path
    )
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    gone = f"base_model.model.model.layers.1.self_attn.q_proj.{dropped}.weight"
    del tensors[gone]
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    with pytest.raises(AdapterLoadError, match=rf"module 'model.layers.1.self_attn.q_proj' but not '{gone}'"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
