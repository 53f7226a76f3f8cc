"""The names HF PEFT scripts import, imported from ``peft`` and from ``peftplug`` and run side by
side on the same tiny models: same enums, classes, keys, tensors and load results (issue 21)."""

from __future__ import annotations

import pytest
from torch_lm import logits_of, model_inputs

import peftplug

peft = pytest.importorskip("peft")

NAMES = (
    "TaskType",
    "PeftType",
    "PeftConfig",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PeftModelForQuestionAnswering",
    "PeftModelForFeatureExtraction",
    "get_peft_model",
    "get_peft_model_state_dict",
    "set_peft_model_state_dict",
    "prepare_model_for_kbit_training",
    "get_peft_config",
    "inject_adapter_in_model",
    "AutoPeftModel",
    "AutoPeftModelForCausalLM",
    "AutoPeftModelForSeq2SeqLM",
    "LoraConfig",
    "IA3Config",
    "PromptTuningConfig",
    "PromptEncoderConfig",
    "PrefixTuningConfig",
)
LIBRARIES = {"peft": peft, "peftplug": peftplug}


def test_every_name_of_an_hf_peft_script_imports_from_peftplug():
    missing = [name for name in NAMES if not hasattr(peftplug, name)]
    assert missing == []
    assert all(hasattr(peft, name) for name in NAMES)


def test_the_enums_have_hf_peft_members_and_compare_equal_to_its_strings():
    assert [(m.name, m.value) for m in peftplug.TaskType] == [(m.name, m.value) for m in peft.TaskType]
    ours = {m.name: m.value for m in peftplug.PeftType}
    assert {"LORA", "IA3", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"} <= set(ours)
    hf = {m.name: m.value for m in peft.PeftType}
    assert {name: hf[name] for name in ours if name in hf} == {
        name: value for name, value in ours.items() if name in hf
    }
    config = peftplug.LoraConfig(task_type=peftplug.TaskType.CAUSAL_LM)
    assert config.peft_type == peftplug.PeftType.LORA == peft.PeftType.LORA == "LORA"
    assert config.task_type == peft.TaskType.CAUSAL_LM
    assert isinstance(config, peftplug.PeftConfig) and isinstance(
        peftplug.PromptTuningConfig(num_virtual_tokens=2), peftplug.PeftConfig
    )


def test_get_peft_config_builds_the_same_config_from_a_dict():
    data = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 3, "lora_alpha": 6, "target_modules": ["q_proj"]}
    ours, theirs = peftplug.get_peft_config(dict(data)), peft.get_peft_config(dict(data))
    assert type(ours).__name__ == type(theirs).__name__ == "LoraConfig"
    assert (ours.r, ours.lora_alpha, ours.task_type) == (theirs.r, theirs.lora_alpha, theirs.task_type)


@pytest.mark.parametrize(
    ("family", "task_type", "task_class"),
    [
        ("llama", "CAUSAL_LM", "PeftModelForCausalLM"),
        ("t5", "SEQ_2_SEQ_LM", "PeftModelForSeq2SeqLM"),
        ("bert", "SEQ_CLS", "PeftModelForSequenceClassification"),
        ("llama", None, "PeftModel"),
    ],
)
def test_get_peft_model_returns_the_task_class_of_the_task_type(make_model, tmp_path, family, task_type, task_class):
    for name, library in LIBRARIES.items():
        config = library.LoraConfig(task_type=task_type, r=2, target_modules=["q", "v", "query", "q_proj"])
        model = library.get_peft_model(make_model(family), config)
        model.save_pretrained(tmp_path / name)
        reloaded = library.PeftModel.from_pretrained(make_model(family), tmp_path / name)
        for each in (model, reloaded):
            assert isinstance(each, getattr(library, task_class)) and isinstance(each, library.PeftModel), name
            assert task_type is None or type(each).__name__ == task_class, name
            assert task_type is not None or not isinstance(each, library.PeftModelForCausalLM), name
        if task_type is None:  # a task class asked for an adapter saved without a task type is that class
            asked = library.PeftModelForCausalLM.from_pretrained(make_model(family), tmp_path / name)
            assert type(asked).__name__ == "PeftModelForCausalLM", name


def _lora_with_head(library):
    return library.LoraConfig(
        task_type="CAUSAL_LM", r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]
    )


def _trained(torch, model):
    """The adapter's parameters set to seeded random values (B is zeros at first)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


@pytest.mark.parametrize(
    "make_config",
    [
        _lora_with_head,
        lambda library: library.IA3Config(task_type="CAUSAL_LM"),
        lambda library: library.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    ],
    ids=["lora", "ia3", "prompt-tuning"],
)
def test_the_state_dict_helpers_give_and_take_hf_peft_keys_and_tensors(torch, make_model, make_config):
    results = {}
    for name, library in LIBRARIES.items():
        torch.manual_seed(1)
        model = _trained(torch, library.get_peft_model(make_model("llama"), make_config(library)))
        state = library.get_peft_model_state_dict(model)
        zeroed = {key: torch.zeros_like(value) for key, value in state.items()}
        zero_result = library.set_peft_model_state_dict(model, zeroed)
        zeroed_state = library.get_peft_model_state_dict(model)
        result = library.set_peft_model_state_dict(model, state)
        results[name] = (
            state,
            zeroed_state,
            zero_result,
            result,
            logits_of(torch, model, model_inputs(torch, "llama")),
        )
    (ours, ours_zeroed, ours_zero, ours_result, our_logits) = results["peftplug"]
    (theirs, theirs_zeroed, _, theirs_result, their_logits) = results["peft"]
    assert list(ours) == list(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
        assert not ours_zeroed[key].any() and not theirs_zeroed[key].any()
    assert (our_logits - their_logits).abs().max().item() <= 1e-5
    assert ours_result.unexpected_keys == theirs_result.unexpected_keys
    # HF PEFT's prompt-learning model also lists its ``word_embeddings`` alias of the base's embeddings.
    assert ours_result.missing_keys == [key for key in theirs_result.missing_keys if key != "word_embeddings.weight"]
    assert tuple(ours_zero) == (ours_zero.missing_keys, ours_zero.unexpected_keys)


def test_inject_adapter_in_model_adapts_the_plain_model_in_place(torch, make_model):
    models = {}
    for name, library in LIBRARIES.items():
        torch.manual_seed(1)
        base = make_model("llama")
        adapted = library.inject_adapter_in_model(library.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]), base)
        assert adapted is base and type(adapted).__name__ == "LlamaForCausalLM"
        assert set(adapted.peft_config) == {"default"}
        models[name] = _trained(torch, adapted)
    names = {name: [n for n, p in model.named_parameters() if p.requires_grad] for name, model in models.items()}
    assert names["peftplug"] == names["peft"]
    ours, theirs = (library.get_peft_model_state_dict(models[n]) for n, library in LIBRARIES.items())
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert list(ours)[0].startswith("model.layers.0.")
    assert peftplug.set_peft_model_state_dict(models["peftplug"], ours) == peft.set_peft_model_state_dict(
        models["peft"], theirs
    )
    inputs = model_inputs(torch, "llama")
    assert (logits_of(torch, models["peftplug"], inputs) - logits_of(torch, models["peft"], inputs)).abs().max() <= 1e-5


def test_inject_refuses_a_prompt_method_and_the_helpers_a_model_without_adapters(make_model):
    from peftplug.errors import ConfigError, PeftplugError

    base = make_model("llama")
    with pytest.raises(ConfigError, match="peft_type='PROMPT_TUNING'.*does not support prompt learning"):
        peftplug.inject_adapter_in_model(peftplug.PromptTuningConfig(num_virtual_tokens=2), base)
    assert not any(name.endswith("peft_config") for name in vars(base))
    with pytest.raises(PeftplugError, match="model: a LlamaForCausalLM holding no peftplug adapter"):
        peftplug.get_peft_model_state_dict(base)
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=2))
    with pytest.raises(ConfigError, match="save_embedding_layers=True"):
        peftplug.get_peft_model_state_dict(model, save_embedding_layers=True)


def test_auto_peft_model_for_causal_lm_builds_the_base_its_config_names(torch, make_model, tmp_path):
    base_dir = tmp_path / "base"
    make_model("llama").save_pretrained(base_dir)
    transformers = pytest.importorskip("transformers")
    model = peftplug.get_peft_model(
        transformers.AutoModelForCausalLM.from_pretrained(base_dir),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"]),
    )
    _trained(torch, model).save_pretrained(tmp_path / "adapter")
    inputs = model_inputs(torch, "llama")
    loaded = {
        name: library.AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
        for name, library in LIBRARIES.items()
    }
    assert type(loaded["peftplug"]).__name__ == type(loaded["peft"]).__name__ == "PeftModelForCausalLM"
    assert not loaded["peftplug"].training
    assert (logits_of(torch, loaded["peftplug"], inputs) - logits_of(torch, loaded["peft"], inputs)).abs().max() <= 1e-5
    for name, library in LIBRARIES.items():  # torch_dtype and device_map load the base
        half = library.AutoPeftModelForCausalLM.from_pretrained(
            str(tmp_path / "adapter"), torch_dtype=torch.bfloat16, device_map={"": "cpu"}
        )
        assert half.get_base_model().dtype == torch.bfloat16, name
    with pytest.raises(peftplug.errors.ConfigError, match="task_type='CAUSAL_LM'.*use AutoPeftModelForCausalLM"):
        peftplug.AutoPeftModelForSeq2SeqLM.from_pretrained(tmp_path / "adapter")
