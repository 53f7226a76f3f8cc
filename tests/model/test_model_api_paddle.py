"""The model API on Paddle as HF PEFT's on torch: the same steps (several adapters, the tuner's
multi-adapter ``set_adapter``, ``inference_mode``, ``disable_adapter``, ``load_adapter``,
``delete_adapter``) on peftplug's Paddle twin of the custom MLP and on HF PEFT's torch MLP leave
the same adapter parameters trainable; merging twice warns and a safe merge of a broken adapter is
an error naming the module, before any weight changes."""

from __future__ import annotations

import warnings

import custom_models
import numpy as np
import pytest
from custom_models import paddle_mlp

import peftplug

peft = pytest.importorskip("peft")


def trainable(model, frozen) -> list[str]:
    """The trainable parameters' names, without torch's ``.weight`` of adapter entries."""
    names = [name.removesuffix(".weight") for name, parameter in model.named_parameters() if not frozen(parameter)]
    return sorted(name for name in names if "lora_" in name)


def steps(library, model, frozen, directory) -> list[tuple[str, list[str]]]:
    """Walk ``model`` through HF PEFT's adapter API; the trainable adapter parameters after each step."""
    seen = [("get_peft_model", trainable(model, frozen))]
    model.add_adapter("other", library.LoraConfig(r=2, target_modules=["lin0", "lin1"]))
    seen.append(("add_adapter", trainable(model, frozen)))
    model.set_adapter("other")
    seen.append(("set_adapter", trainable(model, frozen)))
    model.base_model.set_adapter(["default", "other"])
    seen.append(("tuner set_adapter list", trainable(model, frozen)))
    with model.disable_adapter():
        seen.append(("inside disable_adapter", trainable(model, frozen)))
    seen.append(("after disable_adapter", trainable(model, frozen)))
    model.set_adapter("default", inference_mode=True)
    seen.append(("inference_mode", trainable(model, frozen)))
    model.load_adapter(directory, "loaded", is_trainable=True)
    seen.append(("load_adapter trainable", trainable(model, frozen)))
    model.set_adapter("other")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.delete_adapter("other")
    seen.append(("delete_adapter", trainable(model, frozen)))
    return seen


def test_what_trains_after_each_step_is_what_hf_peft_trains(paddle, torch, tmp_path):
    hf = peft.get_peft_model(custom_models.build(torch, "mlp"), peft.LoraConfig(r=2, target_modules=["lin0"]))
    hf.save_pretrained(tmp_path)
    ours = peftplug.get_peft_model(paddle_mlp(paddle, torch), peftplug.LoraConfig(r=2, target_modules=["lin0"]))
    expected = steps(peft, hf, lambda p: not p.requires_grad, tmp_path)
    assert steps(peftplug, ours, lambda p: p.stop_gradient, tmp_path) == expected
    assert ours.active_adapter == hf.active_adapter == "default"


def test_merge_twice_warns_and_safe_merge_refuses_nan_naming_the_module(paddle, torch):
    model = peftplug.get_peft_model(paddle_mlp(paddle, torch), peftplug.LoraConfig(r=2, target_modules=["lin0"]))
    layer = model.base_model.model.lin0
    layer.lora_B["default"].set_value(np.ones(layer.lora_B["default"].shape, dtype="float32"))
    model.merge_adapter(safe_merge=True)
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do."):
        model.merge_adapter()
    model.unmerge_adapter()
    layer.lora_B["default"].set_value(np.full(layer.lora_B["default"].shape, np.nan, dtype="float32"))
    before = layer.base_layer.weight.numpy().copy()
    with pytest.raises(ValueError, match="'lin0'"):
        model.merge_and_unload(safe_merge=True)
    assert np.array_equal(layer.base_layer.weight.numpy(), before) and not layer.merged


def test_load_adapter_returns_missing_and_unexpected_keys(paddle, torch, tmp_path):
    model = peftplug.get_peft_model(paddle_mlp(paddle, torch), peftplug.LoraConfig(r=2, target_modules=["lin0"]))
    model.save_pretrained(tmp_path)
    result = model.load_adapter(tmp_path, "again")
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert model.peft_config["again"].inference_mode and not model.training
