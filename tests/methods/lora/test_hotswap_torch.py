"""Hot-swapping LoRA weights (HF PEFT's ``hotswap_adapter``): the swapped model gives the new
adapter's logits, keeps every module and parameter object it had, and a ``torch.compile``d
model prepared with ``prepare_model_for_compiled_hotswap`` is not compiled again."""

from __future__ import annotations

import pytest
from torch_lm import logits_of, model_inputs

import peftplug

TARGETS = ["q_proj", "v_proj", "down_proj"]


def saved(make_model, directory, seed: int, **options):
    """A LoRA adapter of the tiny Llama with random A and B (``seed``), saved in ``directory``."""
    import torch

    torch.manual_seed(seed)
    config = peftplug.LoraConfig(init_lora_weights=False, target_modules=TARGETS, **options)
    model = peftplug.get_peft_model(make_model("llama"), config)
    model.save_pretrained(directory)
    return directory


def fresh_logits(torch, make_model, directory):
    return logits_of(
        torch, peftplug.PeftModel.from_pretrained(make_model("llama"), directory), model_inputs(torch, "llama")
    )


def objects(model) -> list[int]:
    return [id(m) for m in model.modules()] + [id(p) for p in model.parameters()]


def test_a_swap_gives_the_new_adapters_logits_in_the_same_modules(torch, make_model, tmp_path):
    first = saved(make_model, tmp_path / "first", 1, r=4, lora_alpha=8)
    second = saved(make_model, tmp_path / "second", 2, r=4, lora_alpha=16)
    model = peftplug.PeftModel.from_pretrained(make_model("llama"), first)
    before = objects(model)
    peftplug.hotswap_adapter(model, second, adapter_name="default")
    assert objects(model) == before
    torch.testing.assert_close(
        logits_of(torch, model, model_inputs(torch, "llama")), fresh_logits(torch, make_model, second)
    )
    assert model.peft_config["default"].lora_alpha == 16


def test_a_swap_equals_hf_peft_hotswap_on_the_same_files(torch, make_model, tmp_path):
    from peft import PeftModel as HFPeftModel
    from peft.utils.hotswap import hotswap_adapter as hf_hotswap_adapter

    first = saved(make_model, tmp_path / "first", 1, r=4, lora_alpha=8)
    second = saved(make_model, tmp_path / "second", 2, r=4, lora_alpha=16)
    ours = peftplug.PeftModel.from_pretrained(make_model("llama"), first)
    theirs = HFPeftModel.from_pretrained(make_model("llama"), str(first)).eval()
    peftplug.hotswap_adapter(ours, second, adapter_name="default")
    hf_hotswap_adapter(theirs, str(second), adapter_name="default")
    inputs = model_inputs(torch, "llama")
    torch.testing.assert_close(logits_of(torch, ours, inputs), logits_of(torch, theirs, inputs))


def test_a_compiled_model_swaps_ranks_and_scalings_without_compiling_again(torch, make_model, tmp_path):
    import torch._dynamo

    first = saved(make_model, tmp_path / "first", 1, r=4, lora_alpha=8)
    second = saved(make_model, tmp_path / "second", 2, r=8, lora_alpha=32, use_rslora=True)
    model = peftplug.PeftModel.from_pretrained(make_model("llama"), first)
    peftplug.prepare_model_for_compiled_hotswap(model, target_rank=8)
    inputs = model_inputs(torch, "llama")
    torch.testing.assert_close(logits_of(torch, model, inputs), fresh_logits(torch, make_model, first))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        logits_of(torch, compiled, inputs)
        peftplug.hotswap_adapter(model, second, adapter_name="default")
        swapped = logits_of(torch, compiled, inputs)
    torch._dynamo.reset()
    torch.testing.assert_close(swapped, fresh_logits(torch, make_model, second))
    model.save_pretrained(tmp_path / "resaved")  # padding is not saved: the file loads as the second
    torch.testing.assert_close(fresh_logits(torch, make_model, tmp_path / "resaved"), swapped)


@pytest.mark.parametrize(
    "options, said",
    [
        ({"r": 8, "lora_alpha": 8}, "holds rank 4 for 'default' and the new adapter has rank 8"),
        ({"r": 4, "target_modules": ["q_proj"]}, "does not adapt the modules 'default' adapts"),
        ({"r": 4, "use_dora": True}, "DoRA adapters cannot be hot-swapped"),
    ],
)
def test_an_adapter_that_does_not_fit_is_refused_before_any_weight_changes(torch, make_model, tmp_path, options, said):
    first = saved(make_model, tmp_path / "first", 1, r=4, lora_alpha=8)
    torch.manual_seed(2)
    config = peftplug.LoraConfig(init_lora_weights=False, **{"target_modules": TARGETS, **options})
    peftplug.get_peft_model(make_model("llama"), config).save_pretrained(tmp_path / "other")
    model = peftplug.PeftModel.from_pretrained(make_model("llama"), first)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=said):
        peftplug.hotswap_adapter(model, tmp_path / "other", adapter_name="default")
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
