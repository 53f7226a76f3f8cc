"""``PeftModel.from_pretrained`` takes the keywords HF PEFT's takes, and returns the model in
eval mode unless ``is_trainable=True``, as HF PEFT does (issue 21); any other keyword is an error
naming it, raised before the model is touched."""

from __future__ import annotations

import pytest
from torch_lm import logits_of, model_inputs

import peftplug
from peftplug.errors import ConfigError

peft = pytest.importorskip("peft")
LIBRARIES = {"peft": peft, "peftplug": peftplug}


@pytest.fixture
def saved(torch, make_model, tmp_path):
    """A trained LoRA adapter of the tiny Llama saved in HF PEFT's files, and its logits."""
    torch.manual_seed(1)
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(task_type="CAUSAL_LM", r=2))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", logits_of(torch, model, model_inputs(torch, "llama"))


@pytest.mark.parametrize(
    "keywords",
    [
        {"torch_dtype": "float32", "device_map": "cpu"},
        {"device_map": "auto", "low_cpu_mem_usage": True},
        {"device_map": {"": "cpu"}, "torch_device": "cpu"},
        {"revision": "main", "autocast_adapter_dtype": True, "ephemeral_gpu_offload": False},
    ],
    ids=["dtype-cpu", "auto", "dict", "revision"],
)
@pytest.mark.parametrize("library", LIBRARIES)
def test_hf_peft_keywords_load_the_same_adapter(torch, make_model, saved, keywords, library):
    directory, expected = saved
    model = LIBRARIES[library].PeftModel.from_pretrained(make_model("llama"), str(directory), **keywords)
    assert (logits_of(torch, model, model_inputs(torch, "llama")) - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("library", LIBRARIES)
def test_from_pretrained_returns_eval_mode_unless_trainable(make_model, saved, library):
    directory, _ = saved
    for is_trainable, training in ((False, False), (True, True)):
        model = LIBRARIES[library].PeftModel.from_pretrained(
            make_model("llama").train(), str(directory), is_trainable=is_trainable
        )
        assert model.training is training and all(m.training is training for m in model.modules())


def test_a_keyword_peftplug_does_not_take_is_an_error_naming_it_before_anything_changes(make_model, saved):
    directory, _ = saved
    base = make_model("llama")
    before = [name for name, _ in base.named_modules()]
    cases = {
        "adapter_nmae": "unknown keyword",
        "token": "downloaded",
        "key_mapping": "module maps",
        "device_map": "a device",
        "autocast_adapter_dtype": "True or False",
    }
    values = {"device_map": "everywhere", "autocast_adapter_dtype": "no"}
    for keyword, reason in cases.items():
        with pytest.raises(ConfigError, match=rf"PeftModel.from_pretrained\.{keyword}=.*{reason}"):
            peftplug.PeftModel.from_pretrained(base, str(directory), **{keyword: values.get(keyword, "x")})
    assert [name for name, _ in base.named_modules()] == before


def test_autocast_adapter_dtype_false_keeps_a_bfloat16_bases_adapter_in_bfloat16(torch, make_model, saved):
    directory, _ = saved
    loaded = {}
    for name, library in LIBRARIES.items():
        for autocast in (True, False):
            model = library.PeftModel.from_pretrained(
                make_model("llama").to(torch.bfloat16), str(directory), autocast_adapter_dtype=autocast
            )
            dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
            assert dtypes == {torch.float32 if autocast else torch.bfloat16}, (name, autocast)
            loaded[name, autocast] = logits_of(torch, model, model_inputs(torch, "llama"))
    gaps = {
        autocast: (loaded["peftplug", autocast].float() - loaded["peft", autocast].float()).abs().max().item()
        for autocast in (True, False)
    }
    # float32 adapters: the same logits. bfloat16 adapters: peftplug adds the scaled B product into
    # the base output with one addmm, HF PEFT with separate ops, so bfloat16 rounds them a few units
    # of its last place apart.
    assert gaps[True] <= 1e-6 and gaps[False] <= 2**-8, gaps
