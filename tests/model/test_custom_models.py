"""The model API on tiny custom models, in the shape of HF PEFT's custom-model tests: LoRA (plain,
DoRA), IA3 and modules_to_save on an MLP, a GPT-2 Conv1D model, an Embedding model and a Conv2d
model; save and load (safetensors and pickle), several adapters, merge (plain, safe, twice),
disable, the active adapter, delete, and training that updates only the adapter.

Each test body runs on peftplug and on HF PEFT (the ``library`` parameter), so each assertion is
one HF PEFT itself passes; one more test loads HF PEFT's files into peftplug and compares logits.
"""

from __future__ import annotations

import warnings

import custom_models
import pytest
from custom_models import CASES, NOT_SUPPORTED

LIBRARIES = ["peftplug", "peft"]


def case_params():
    params = [pytest.param(case, id=case[0]) for case in CASES]
    params += [pytest.param(None, id=name, marks=pytest.mark.skip(reason=why)) for name, why in NOT_SUPPORTED.items()]
    return params


@pytest.fixture(params=LIBRARIES)
def library(request):
    return pytest.importorskip(request.param)


@pytest.fixture(params=case_params())
def case(request):
    return request.param


def make(torch, library, case, adapter_name="default"):
    """(peft model, inputs, base output) for ``case`` built with ``library``, its adapter randomised."""
    _, kind, config_class, fields = case
    base = custom_models.build(torch, kind)
    x = custom_models.inputs(torch, kind)
    with torch.no_grad():
        expected = base(x)
    config = getattr(library, config_class)(**fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out set for Conv1D
        model = library.get_peft_model(base, config, adapter_name=adapter_name)
    custom_models.randomise(torch, model)
    return model, x, expected


def second_adapter(torch, library, case, model, name="other"):
    """Add a second adapter of the same kind and randomise it (with a seed of its own)."""
    _, _, config_class, fields = case
    model.add_adapter(name, getattr(library, config_class)(**fields))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter_name, parameter in sorted(model.named_parameters()):
            if f".{name}." in parameter_name or parameter_name.endswith(f".{name}"):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)


def output(torch, model, x):
    with torch.no_grad():
        return model(x)


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def adapter_parameters(model, adapter_name) -> set[str]:
    return {
        name for name, _ in model.named_parameters() if f".{adapter_name}." in name or name.endswith(f".{adapter_name}")
    }


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "pickle"])
def test_save_and_load_give_the_same_outputs(torch, library, case, safe_serialization, tmp_path):
    model, x, _ = make(torch, library, case)
    model.eval()
    before = output(torch, model, x)
    model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    weights = "adapter_model.safetensors" if safe_serialization else "adapter_model.bin"
    assert (tmp_path / weights).is_file() and (tmp_path / "adapter_config.json").is_file()
    loaded = library.PeftModel.from_pretrained(custom_models.build(torch, case[1]), tmp_path)
    loaded.eval()
    assert torch.allclose(output(torch, loaded, x), before, atol=1e-6)
    assert not trainable(loaded)  # is_trainable=False: frozen for inference


def test_peftplug_loads_hf_peft_files_with_equal_outputs(torch, case, tmp_path):
    import peft

    import peftplug

    model, x, _ = make(torch, peft, case)
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = peftplug.PeftModel.from_pretrained(custom_models.build(torch, case[1]), tmp_path)
    loaded.eval()
    assert torch.allclose(output(torch, loaded, x), output(torch, model, x), atol=1e-6)
    assert sorted(n for n, _ in loaded.named_parameters()) == sorted(n for n, _ in model.named_parameters())


def test_several_adapters_switch_the_output_and_what_trains(torch, library, case):
    model, x, _ = make(torch, library, case)
    first = output(torch, model, x)
    second_adapter(torch, library, case, model)
    assert torch.allclose(output(torch, model, x), first)  # added inactive
    assert trainable(model) == adapter_parameters(model, "default")
    model.set_adapter("other")
    assert model.active_adapter == "other" and model.active_adapters == ["other"]
    assert model.base_model.active_adapter == "other"
    assert not torch.allclose(output(torch, model, x), first)
    assert trainable(model) == adapter_parameters(model, "other")
    model.set_adapter("default", inference_mode=True)
    assert torch.allclose(output(torch, model, x), first)
    assert not trainable(model)


def test_several_active_adapters_on_the_tuner(torch, library, case):
    model, x, _ = make(torch, library, case)
    second_adapter(torch, library, case, model)
    if case[3].get("modules_to_save"):
        with pytest.raises(ValueError):  # one modules_to_save copy at a time
            model.base_model.set_adapter(["default", "other"])
        return
    model.base_model.set_adapter(["default", "other"])
    assert model.base_model.active_adapters == ["default", "other"]
    assert trainable(model) == adapter_parameters(model, "default") | adapter_parameters(model, "other")
    both = output(torch, model, x)
    model.base_model.set_adapter("default")
    assert not torch.allclose(output(torch, model, x), both)


def test_merge_safe_merge_and_merging_twice(torch, library, case):
    model, x, _ = make(torch, library, case)
    unmerged = output(torch, model, x)
    model.merge_adapter(safe_merge=True)
    assert torch.allclose(output(torch, model, x), unmerged, atol=1e-5)
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do."):
        model.merge_adapter()
    model.unmerge_adapter()
    assert torch.allclose(output(torch, model, x), unmerged, atol=1e-4)
    merged = model.merge_and_unload(safe_merge=True, adapter_names=["default"])
    assert type(merged).__name__ == type(custom_models.build(torch, case[1])).__name__
    assert all(type(child).__module__.startswith(("torch.", "transformers.")) for child in merged.children())
    assert torch.allclose(output(torch, merged, x), unmerged, atol=1e-5)


def test_safe_merge_refuses_nan_before_writing(torch, library, case):
    model, x, _ = make(torch, library, case)
    name = sorted(n for n in adapter_parameters(model, "default") if "modules_to_save" not in n)[0]
    with torch.no_grad():
        model.get_parameter(name).fill_(float("nan"))
    weights = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    with pytest.raises(ValueError, match="NaN"):
        model.merge_adapter(safe_merge=True)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)


def test_disable_adapter_runs_the_base_model_with_nothing_trainable(torch, library, case):
    model, x, expected = make(torch, library, case)
    with model.disable_adapter():
        assert torch.allclose(output(torch, model, x), expected)
        assert not trainable(model)
    assert not torch.allclose(output(torch, model, x), expected)
    assert trainable(model) == adapter_parameters(model, "default")


def test_delete_adapter_activates_the_remaining_one(torch, library, case):
    model, x, _ = make(torch, library, case)
    first = output(torch, model, x)
    second_adapter(torch, library, case, model)
    model.set_adapter("other")
    with pytest.warns(UserWarning, match="Adapter other was active which is now deleted"):
        model.delete_adapter("other")
    assert model.active_adapter == "default" and "other" not in model.peft_config
    assert not adapter_parameters(model, "other")
    assert trainable(model) == adapter_parameters(model, "default")
    assert torch.allclose(output(torch, model, x), first)


def test_load_adapter_returns_the_keys_and_sets_what_trains(torch, library, case, tmp_path):
    model, x, _ = make(torch, library, case)
    model.save_pretrained(tmp_path)
    result = model.load_adapter(tmp_path, "frozen")
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    assert not model.training  # loaded for inference: eval mode
    assert trainable(model) == adapter_parameters(model, "default")
    model.load_adapter(tmp_path, "trained", is_trainable=True)
    assert trainable(model) == adapter_parameters(model, "default") | adapter_parameters(model, "trained")


def test_training_updates_only_the_adapter(torch, library, case):
    model, x, _ = make(torch, library, case)
    model.train()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).float().pow(2).mean().backward()
        optimizer.step()
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert changed and changed <= adapter_parameters(model, "default")


def test_the_config_passed_in_is_kept_and_base_model_is_a_tuner(torch, library, case):
    _, kind, config_class, fields = case
    config = getattr(library, config_class)(**fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = library.get_peft_model(custom_models.build(torch, kind), config)
    assert model.peft_config["default"] is config
    tuner = model.base_model
    for method in ("set_adapter", "enable_adapter_layers", "disable_adapter_layers", "delete_adapter"):
        assert callable(getattr(type(tuner), method, None)), method
    for method in ("merge_adapter", "unmerge_adapter", "merge_and_unload", "unload"):
        assert callable(getattr(type(tuner), method, None)), method
    assert tuner.active_adapter == ["default"] and tuner.active_adapters == ["default"]
    assert type(tuner.model).__name__ == type(custom_models.build(torch, kind)).__name__
    expected = set(fields["modules_to_save"]) if "modules_to_save" in fields else None
    assert model.modules_to_save == expected
