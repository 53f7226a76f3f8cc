"""Mixed batches (HF PEFT's ``adapter_names=``): each row of one forward or ``generate`` with its
own adapter equals that row run alone with that adapter active; plain LoRA adapters go through
one batched product per layer, not a loop over adapters; bad names are refused as HF PEFT does."""

from __future__ import annotations

import pytest
from mixed_batch_cases import CASES, ROWS, with_adapters


def batch(torch, rows: int = len(ROWS)):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (rows, 6), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def alone(torch, model, inputs, names):
    """Each row's logits with its adapter active, one row at a time."""
    rows = []
    for row, name in enumerate(names):
        one = {key: value[row : row + 1] for key, value in inputs.items()}
        with torch.no_grad():
            if name == "__base__":
                with model.disable_adapter():
                    rows.append(model(**one).logits)
            else:
                model.set_adapter(name)
                rows.append(model(**one).logits)
    return torch.cat(rows)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_row_equals_its_adapter_run_alone(torch, make_model, case):
    model = with_adapters(make_model("llama"), CASES[case])
    inputs = batch(torch)
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=ROWS).logits
    expected = alone(torch, model, inputs, ROWS)
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)


def test_lora_equals_hf_peft_mixed_batch_on_the_same_weights(torch, make_model, tmp_path):
    from peft import PeftModel as HFPeftModel

    configs = CASES["lora, three ranks"]
    model = with_adapters(make_model("llama"), configs)
    model.save_pretrained(tmp_path)
    reference = HFPeftModel.from_pretrained(make_model("llama"), str(tmp_path / "a"), adapter_name="a")
    for name in ("b", "c"):
        reference.load_adapter(str(tmp_path / name), adapter_name=name)
    reference.eval()
    inputs = batch(torch)
    with torch.no_grad():
        ours = model(**inputs, adapter_names=ROWS).logits
        theirs = reference(**inputs, adapter_names=ROWS).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_generate_gives_each_prompt_its_adapters_continuation(torch, make_model):
    model = with_adapters(make_model("llama"), CASES["lora, three ranks"])
    inputs = batch(torch)
    settings = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        mixed = model.generate(**inputs, adapter_names=ROWS, **settings)
        expected = []
        for row, name in enumerate(ROWS):
            one = {key: value[row : row + 1] for key, value in inputs.items()}
            if name == "__base__":
                with model.disable_adapter():
                    expected.append(model.generate(**one, **settings))
            else:
                model.set_adapter(name)
                expected.append(model.generate(**one, **settings))
    assert torch.equal(mixed, torch.cat(expected))


def test_plain_lora_runs_one_batched_product_per_layer_not_one_per_adapter(torch, make_model, monkeypatch):
    """The base layer runs once per LoRA layer and the adapters in two ``bmm`` calls, whatever
    the number of adapters in the batch."""
    model = with_adapters(make_model("llama"), CASES["lora, three ranks"])
    layers = [layer for _, layer in model._adapter_layers()]
    calls = {"base": 0, "bmm": 0}
    for layer in layers:
        layer.base_layer.register_forward_hook(lambda *_: calls.__setitem__("base", calls["base"] + 1))
    real_bmm = torch.bmm

    def counted_bmm(*args, **kwargs):
        calls["bmm"] += 1
        return real_bmm(*args, **kwargs)

    monkeypatch.setattr(torch, "bmm", counted_bmm)
    with torch.no_grad():
        model(**batch(torch), adapter_names=ROWS)
    assert calls == {"base": len(layers), "bmm": 2 * len(layers)}


@pytest.mark.parametrize(
    "names, error, said",
    [
        (["a", "zz", "__base__", "a", "a", "a"], ValueError, "non-existing adapter(s): zz"),
        (["a", "b"], ValueError, "should be the same as the number of inputs, but got 2 and 6"),
        ("a", TypeError, "must be a list of adapter names"),
    ],
)
def test_bad_adapter_names_are_refused_naming_them(torch, make_model, names, error, said):
    model = with_adapters(make_model("llama"), CASES["lora, three ranks"])
    with pytest.raises(error, match=said.replace("(", r"\(").replace(")", r"\)")):
        model(**batch(torch), adapter_names=names)
    assert all("forward" not in layer.__dict__ for _, layer in model._adapter_layers()), "the model was restored"


def test_training_mode_and_merged_adapters_are_refused(torch, make_model):
    model = with_adapters(make_model("llama"), CASES["lora, three ranks"])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(**batch(torch), adapter_names=ROWS)
    model.eval()
    model.merge_adapter(["a"])
    with pytest.raises(ValueError, match="merged adapters"):
        model(**batch(torch), adapter_names=ROWS)
