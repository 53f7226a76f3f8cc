"""DoRA (``use_dora=True``) on PyTorch against the real HF PEFT: counts, files both ways, the
training step, merging, and what is refused."""

from __future__ import annotations

import pytest
from torch_lm import logits_of, model_inputs, train_steps

import peftplug
from peftplug.errors import PeftplugError

peft = pytest.importorskip("peft")

TARGETS = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_proj"]}  # Linear; GPT-2's Conv1D


def dora_config(library, family, **fields):
    """A DoRA config of ``library`` (peftplug or peft) on ``family``'s linear layers; B random, so
    that the magnitude and the direction both matter from the start."""
    fields = {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": TARGETS[family],
        "init_lora_weights": False,
        "use_dora": True,
        **fields,
    }
    return library.LoraConfig(task_type="CAUSAL_LM", **fields)


def both(torch, make_model, family, **fields):
    """peftplug's and peft's DoRA models of the same base, peftplug's holding peft's adapter
    weights after a few training steps (so each magnitude differs from its row norm: at
    initialisation they are equal, and DoRA computes what plain LoRA does)."""
    theirs = peft.get_peft_model(make_model(family), dora_config(peft, family, **fields))
    train_steps(torch, theirs, model_inputs(torch, family))
    ours = peftplug.get_peft_model(make_model(family), dora_config(peftplug, family, **fields))
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("family", TARGETS)
def test_counts_names_and_logits_equal_hf_peft(torch, make_model, family):
    ours, theirs = both(torch, make_model, family)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert sorted(n for n, p in ours.named_parameters() if p.requires_grad) == sorted(
        n for n, p in theirs.named_parameters() if p.requires_grad
    )
    inputs = model_inputs(torch, family)
    assert torch.allclose(logits_of(torch, ours, inputs), logits_of(torch, theirs, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", TARGETS)
def test_adapters_go_both_ways_with_the_same_logits(torch, make_model, family, tmp_path):
    ours = peftplug.get_peft_model(make_model(family), dora_config(peftplug, family))
    inputs = model_inputs(torch, family)
    train_steps(torch, ours, inputs)
    ours.save_pretrained(tmp_path / "ours")
    in_peft = peft.PeftModel.from_pretrained(make_model(family), tmp_path / "ours")
    expected = logits_of(torch, ours, inputs)
    assert torch.allclose(logits_of(torch, in_peft, inputs), expected, atol=1e-5, rtol=0)

    theirs = peft.get_peft_model(make_model(family), dora_config(peft, family))
    train_steps(torch, theirs, inputs)
    theirs.save_pretrained(tmp_path / "theirs")
    in_ours = peftplug.PeftModel.from_pretrained(make_model(family), tmp_path / "theirs")
    assert in_ours.peft_config["default"].use_dora
    assert torch.allclose(logits_of(torch, in_ours, inputs), logits_of(torch, theirs, inputs), atol=1e-5, rtol=0)


def test_a_training_step_with_dropout_and_biases_equals_hf_peft(torch, make_model, monkeypatch):
    """With LoRA dropout on, W x is recomputed on the dropped-out input; with bias="all" it
    excludes the (trainable) bias. Same seed, same masks (torch's dropout, as HF PEFT draws
    them): same loss and gradients."""
    monkeypatch.setenv("PEFTPLUG_DROPOUT", "torch")
    ours, theirs = both(torch, make_model, "llama", lora_dropout=0.3, bias="all")
    inputs = model_inputs(torch, "llama")
    losses = []
    for model in (ours, theirs):
        model.train()
        torch.manual_seed(5)
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    ours_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    theirs_grads = {n: p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    assert sorted(ours_grads) == sorted(theirs_grads)
    assert any("lora_magnitude_vector" in n for n in ours_grads)
    for name, grad in ours_grads.items():
        assert torch.allclose(grad, theirs_grads[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize("family", TARGETS)
def test_merging_gives_hf_peft_weights_and_unmerging_restores(torch, make_model, family):
    ours, theirs = both(torch, make_model, family)
    inputs = model_inputs(torch, family)
    unmerged = logits_of(torch, ours, inputs)
    base = {k: v.clone() for k, v in ours.get_base_model().state_dict().items() if "base_layer.weight" in k}
    ours.merge_adapter()
    theirs.merge_adapter()
    mine = ours.get_base_model().state_dict()
    hf = theirs.get_base_model().state_dict()
    for key in base:
        assert torch.allclose(mine[key], hf[key], atol=1e-6, rtol=0), key
    assert torch.allclose(logits_of(torch, ours, inputs), unmerged, atol=1e-5, rtol=0)
    ours.unmerge_adapter()
    restored = ours.get_base_model().state_dict()
    for key, weight in base.items():
        assert torch.allclose(restored[key], weight, atol=1e-6, rtol=0), key
    merged = ours.merge_and_unload()
    assert torch.allclose(logits_of(torch, merged, inputs), unmerged, atol=1e-5, rtol=0)


def test_a_dora_adapter_merges_alone(make_model):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=4, target_modules=["q_proj"]))
    model.add_adapter("dora", dora_config(peftplug, "llama", target_modules=["q_proj"]))
    model.merge_adapter(["default"])
    with pytest.raises(PeftplugError, match="cannot merge DoRA adapter 'dora' while \\['default'\\] is merged"):
        model.merge_adapter(["dora"])


def test_what_dora_does_not_cover_is_refused_naming_it(make_model, tmp_path):
    with pytest.raises(PeftplugError, match="DoRA .* on model.embed_tokens: .* not Embedding"):
        peftplug.get_peft_model(make_model("llama"), dora_config(peftplug, "llama", target_modules=["embed_tokens"]))
    model = peftplug.get_peft_model(make_model("llama"), dora_config(peftplug, "llama"))
    with pytest.raises(PeftplugError, match="lora_magnitude_vector': PaddleNLP has no LoRA for embeddings and no DoRA"):
        model.save_pretrained(tmp_path / "pd", format="paddlenlp")
    assert not (tmp_path / "pd").exists() or not any((tmp_path / "pd").iterdir())
