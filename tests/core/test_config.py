"""Configs: HF PEFT's fields and JSON, and clear errors for bad values."""

from __future__ import annotations

import json

import pytest

import peftplug
from peftplug.errors import ConfigError, RegistryError


def test_lora_defaults_are_hf_peft_defaults():
    config = peftplug.LoraConfig()
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (8, 8, 0.0, "none")
    assert config.target_modules is None and config.init_lora_weights is True
    assert config.peft_type == "LORA" and config.to_dict()["peft_type"] == "LORA"


def test_json_is_written_as_hf_peft_writes_it(tmp_path):
    peftplug.LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM").save_pretrained(tmp_path)
    text = (tmp_path / "adapter_config.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["r"] == 4 and data["lora_alpha"] == 8 and isinstance(data["lora_alpha"], int)
    assert peftplug.AdapterConfig.from_pretrained(tmp_path) == peftplug.LoraConfig.from_dict(data)


def test_our_config_file_loads_in_peft_and_theirs_in_ours(tmp_path):
    peft = pytest.importorskip("peft")
    ours = peftplug.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], use_rslora=True)
    ours.save_pretrained(tmp_path / "ours")
    theirs = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert (theirs.r, theirs.lora_alpha, theirs.use_rslora, sorted(theirs.target_modules)) == (
        4,
        16,
        True,
        ["q_proj", "v_proj"],
    )
    theirs.save_pretrained(tmp_path / "theirs")
    back = peftplug.AdapterConfig.from_pretrained(tmp_path / "theirs")
    assert isinstance(back, peftplug.LoraConfig) and (back.r, back.lora_alpha, back.use_rslora) == (4, 16, True)


def test_unknown_fields_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="brand_new_field"):
        config = peftplug.LoraConfig.from_dict({"peft_type": "LORA", "r": 2, "brand_new_field": 1})
    assert config.r == 2


def test_a_feature_peftplug_lacks_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="lora_bias"):
        peftplug.LoraConfig.from_dict({"peft_type": "LORA", "lora_bias": True})
    assert peftplug.LoraConfig.from_dict({"peft_type": "LORA", "lora_bias": False}).r == 8


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"r": 0}, "r"),
        ({"r": -4}, "r"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"lora_dropout": -0.1}, "lora_dropout"),
        ({"bias": "some"}, "bias"),
        ({"task_type": "CAUSAL"}, "task_type"),
        ({"r": "8"}, "r"),
        ({"target_modules": 3}, "target_modules"),
        ({"fan_in_fan_out": "yes"}, "fan_in_fan_out"),
        ({"rank_pattern": {"q_proj": 0}}, "rank_pattern"),
    ],
)
def test_invalid_values_name_the_field_and_value(fields, field):
    with pytest.raises(ConfigError) as error:
        peftplug.LoraConfig(**fields)
    assert error.value.field == field
    assert f"{field}=" in str(error.value) and repr(fields[field]) in str(error.value)


def test_config_from_dict_picks_the_class_through_the_registry():
    config = peftplug.config_from_dict({"peft_type": "LORA", "r": 16, "target_modules": ["q"]})
    assert isinstance(config, peftplug.LoraConfig) and config.r == 16
    with pytest.raises(RegistryError, match="unknown peft_type 'NOPE'.*LORA"):
        peftplug.config_from_dict({"peft_type": "NOPE"})
    with pytest.raises(ConfigError, match="peft_type"):
        peftplug.config_from_dict({"r": 4})
