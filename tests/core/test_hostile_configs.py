"""Careless adapter configs and paths: each is one error naming the file (and the line and
column of bad JSON), raised before the model changes."""

from __future__ import annotations

import pytest

import peftplug
from peftplug.errors import AdapterLoadError


@pytest.fixture
def saved(make_model, tmp_path):
    """A saved LoRA adapter of the tiny Llama."""
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


@pytest.mark.parametrize(
    "text, said",
    [
        ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
        (
            '{"r": 2,\n  "peft_type": "LORA",\n}',
            "is not valid JSON: Expecting property name enclosed in double quotes at line 3, column 1",
        ),
        ("[1, 2]", "holds a JSON list, not the object of an adapter config"),
        (b"\xff\xfe{}", "cannot read"),
    ],
)
def test_a_broken_adapter_config_names_the_file(make_model, saved, text, said):
    config = saved / "adapter_config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    base = make_model("llama")
    with pytest.raises(AdapterLoadError) as error:
        peftplug.PeftModel.from_pretrained(base, saved)
    assert str(config) in str(error.value) and said in str(error.value), str(error.value)
    assert not any("lora" in name for name, _ in base.named_modules()), "the model is as it was"


def test_a_file_given_for_the_adapter_directory_is_named_as_a_file(make_model, saved):
    with pytest.raises(AdapterLoadError, match=r"is a file, not a directory: pass the folder .*adapter'"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), saved / "adapter_config.json")


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_a_second_get_peft_model_on_one_base_keeps_the_first_adapter(backend, request):
    """Wrapping the same base again under the same adapter name would re-initialise the first
    model's trained adapter in the shared layers: refused, naming it, before anything changes;
    another name is allowed with HF PEFT's warning."""
    import numpy as np

    from peftplug.errors import PeftplugError
    from peftplug.testing import get_driver

    driver = get_driver(backend)
    if driver.missing():
        pytest.skip(driver.missing())
    base = driver.tiny_model("llama")
    first = peftplug.get_peft_model(base, peftplug.LoraConfig(target_modules=["q_proj"]))
    driver.train_steps(first, driver.inputs())
    trained = driver.named_arrays(first, trainable=True)
    with pytest.raises(PeftplugError, match=r"already holds adapter 'default'.*add_adapter"):
        peftplug.get_peft_model(base, peftplug.LoraConfig(target_modules=["q_proj"]))
    with pytest.warns(UserWarning, match=r"second time \(it holds adapters \['default'\]\)"):
        peftplug.get_peft_model(base, peftplug.LoraConfig(target_modules=["v_proj"]), adapter_name="other")
    for name, array in driver.named_arrays(first).items():
        if name in trained:
            np.testing.assert_array_equal(array, trained[name], err_msg=name)


@pytest.mark.parametrize(
    "edit, field",
    [
        ({"target_modules": 3}, "target_modules"),
        ({"target_modules": [".*q_proj", 4]}, "target_modules"),
        ({"r": None}, "r"),
        ({"r": "8"}, "r"),
    ],
    ids=["targets-an-int", "a-target-not-a-string", "no-r", "r-a-string"],
)
def test_a_bad_paddlenlp_lora_config_names_the_field(make_model, tmp_path, edit, field):
    """target_modules that are no regexes, or a missing or non-integer r, are a ConfigError
    naming the field (a TypeError, or a shape error after a default rank, before)."""
    import json

    from peftplug.errors import ConfigError

    peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=["q_proj"])).save_pretrained(
        tmp_path, format="paddlenlp"
    )
    config = json.loads((tmp_path / "lora_config.json").read_text())
    for key, value in edit.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (tmp_path / "lora_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=rf"lora_config\.json.*{field}"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)


def test_a_target_that_is_no_linear_layer_leaves_the_model_as_it_was(make_model):
    """q_proj comes before mlp in the model, yet it is not wrapped when mlp cannot be: the error
    (a ValueError) names the module and comes before any layer is replaced."""
    from peftplug.errors import TargetModulesError

    base = make_model("llama")
    with pytest.raises(TargetModulesError, match=r"module 'model.layers.0.mlp' \(LlamaMLP\) matched target_modules"):
        peftplug.get_peft_model(base, peftplug.LoraConfig(target_modules=r".*\.(q_proj|mlp)"))
    assert issubclass(TargetModulesError, ValueError)
    assert not any("lora" in name for name, _ in base.named_modules()), "the model is as it was"
