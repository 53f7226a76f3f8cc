"""Hostile and careless adapter names: one rule on both backends, checked where a name enters
(``get_peft_model``, ``add_adapter``, ``load_adapter``, ``from_pretrained(adapter_name=)``),
before anything changes in the model or on disk. A name that escaped once wrote a whole adapter
to ``out/../x`` or an absolute path, or overwrote the default adapter in the same save."""

from __future__ import annotations

import pytest

import peftplug
from peftplug.errors import ConfigError

BAD = ["../x", "/abs/path", "", ".", "..", "a/b", "a\\b", ".hidden", "x" * 300, "a\x00b", "sp ace", "dot.ted", 3, None]
GOOD = ["other", "my-adapter_2", "A" * 255]


def lora():
    return peftplug.LoraConfig(r=2, target_modules=["q_proj"])


@pytest.fixture(params=["torch", "paddle"])
def make_base(request):
    """A factory of the tiny Llama of one backend (the Paddle one skips without Paddle)."""
    if request.param == "torch":
        make = request.getfixturevalue("make_model")
    else:
        make = request.getfixturevalue("make_paddle_model")
    return lambda: make("llama")


def snapshot(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def assert_refused(call, name):
    with pytest.raises(ConfigError) as error:
        call()
    message = str(error.value)
    assert repr(name)[:40] in message and "letters, digits, '_' and '-'" in message, message


@pytest.mark.parametrize("name", BAD, ids=repr)
def test_a_bad_name_is_refused_everywhere_it_enters_before_anything_changes(make_base, tmp_path, name):
    saved = tmp_path / "saved"
    model = peftplug.get_peft_model(make_base(), lora())
    model.save_pretrained(saved)
    before = snapshot(tmp_path)

    assert_refused(lambda: peftplug.get_peft_model(make_base(), lora(), adapter_name=name), name)
    assert_refused(lambda: model.add_adapter(name, lora()), name)
    assert_refused(lambda: model.load_adapter(saved, name), name)
    assert_refused(lambda: peftplug.PeftModel.from_pretrained(make_base(), saved, adapter_name=name), name)
    assert list(model.peft_config) == ["default"]
    model.save_pretrained(tmp_path / "out")
    assert snapshot(tmp_path) == sorted(
        before + [f"out{name}" for name in ("", "/README.md", "/adapter_config.json", "/adapter_model.safetensors")]
    )


@pytest.mark.parametrize("name", GOOD, ids=lambda n: n[:12])
def test_a_good_name_is_saved_in_its_own_subfolder(make_base, tmp_path, name):
    model = peftplug.get_peft_model(make_base(), lora())
    model.add_adapter(name, lora())
    model.save_pretrained(tmp_path)
    assert (tmp_path / name / "adapter_config.json").is_file()
    model.load_adapter(tmp_path / name, name + "x" if len(name) < 255 else "copy")
