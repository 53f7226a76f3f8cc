"""LoRA on PyTorch against the real HF PEFT: counts, files both ways, merging, adapters."""

from __future__ import annotations

import copy

import pytest
from torch_lm import logits_of, model_inputs, train_steps

import peftplug

peft = pytest.importorskip("peft")

FAMILIES = ["llama", "gpt2", "t5", "bert"]
TASKS = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM", "bert": "SEQ_CLS"}


def both(make_model, family, **fields):
    """The same base wrapped by peftplug and by peft with the same LoRA config."""
    fields.setdefault("task_type", TASKS[family])
    ours = peftplug.get_peft_model(make_model(family), peftplug.LoraConfig(**fields))
    theirs = peft.get_peft_model(make_model(family), peft.LoraConfig(**fields))
    return ours, theirs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "fields",
    [{}, {"r": 4, "target_modules": "all-linear"}, {"r": 2, "bias": "lora_only"}, {"bias": "all", "use_rslora": True}],
    ids=["defaults", "all-linear", "bias-lora-only", "bias-all-rslora"],
)
def test_parameter_counts_equal_hf_peft(make_model, family, fields):
    ours, theirs = both(make_model, family, **fields)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert sorted(n for n, p in ours.named_parameters() if p.requires_grad) == sorted(
        n for n, p in theirs.named_parameters() if p.requires_grad
    )


def test_print_trainable_parameters_matches_hf_peft(make_model, capsys):
    ours, theirs = both(make_model, "llama", target_modules=["q_proj", "v_proj", "embed_tokens"])
    ours.print_trainable_parameters()
    theirs.print_trainable_parameters()
    ours_line, theirs_line = capsys.readouterr().out.strip().splitlines()
    assert ours_line == theirs_line
    assert ours_line.startswith("trainable params: ")


@pytest.mark.parametrize("family", FAMILIES)
def test_peftplug_adapter_loads_in_peft_with_same_logits(torch, make_model, family, tmp_path):
    targets = {"llama": ["q_proj", "v_proj", "embed_tokens"], "gpt2": ["c_attn", "c_proj"], "t5": None, "bert": None}
    model = peftplug.get_peft_model(
        make_model(family), peftplug.LoraConfig(task_type=TASKS[family], r=4, target_modules=targets[family])
    )
    inputs = model_inputs(torch, family)
    train_steps(torch, model, inputs)
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(make_model(family), tmp_path)
    expected = logits_of(torch, model, inputs)
    assert not torch.allclose(expected, logits_of(torch, make_model(family), inputs)), "training had no effect"
    assert (logits_of(torch, loaded, inputs) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_loads_in_peftplug_with_same_logits(torch, make_model, family, tmp_path):
    theirs = peft.get_peft_model(make_model(family), peft.LoraConfig(task_type=TASKS[family], r=4, lora_alpha=16))
    inputs = model_inputs(torch, family)
    train_steps(torch, theirs, inputs)
    theirs.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(make_model(family), tmp_path)
    assert isinstance(ours, peftplug.PeftModel)
    assert (logits_of(torch, ours, inputs) - logits_of(torch, theirs, inputs)).abs().max().item() <= 1e-5
    assert ours.get_nb_trainable_parameters()[0] == 0, "loaded for inference: nothing trainable"


def test_peft_bin_adapter_loads_in_peftplug(torch, make_model, tmp_path):
    theirs = peft.get_peft_model(make_model("llama"), peft.LoraConfig(r=4, init_lora_weights=False))
    theirs.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").is_file()
    ours = peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    inputs = model_inputs(torch, "llama")
    assert (logits_of(torch, ours, inputs) - logits_of(torch, theirs, inputs)).abs().max().item() <= 1e-5


def test_bin_with_code_is_refused(torch, make_model, tmp_path):
    import pickle

    peftplug.LoraConfig(r=2, target_modules=["q_proj"]).save_pretrained(tmp_path)

    class RunsCode:
        def __reduce__(self):
            return (exec, ("open({!r}, 'w').write('pwned')".format(str(tmp_path / "pwned")),))

    (tmp_path / "adapter_model.bin").write_bytes(pickle.dumps({"x": RunsCode()}))
    with pytest.raises(peftplug.errors.AdapterLoadError, match="adapter_model.bin"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_named_adapters_round_trip_with_peft(torch, make_model, tmp_path):
    inputs = model_inputs(torch, "llama")
    ours = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=2, init_lora_weights=False))
    ours.add_adapter("other", peftplug.LoraConfig(r=4, target_modules=["k_proj"], init_lora_weights=False))
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()

    theirs = peft.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    theirs.load_adapter(tmp_path / "other", adapter_name="other")
    reloaded = peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path, adapter_name="first")
    reloaded.load_adapter(tmp_path, adapter_name="other", subfolder="other")
    for name_ours, name_theirs, name_reloaded in [("default", "default", "first"), ("other", "other", "other")]:
        ours.set_adapter(name_ours)
        theirs.set_adapter(name_theirs)
        reloaded.set_adapter(name_reloaded)
        expected = logits_of(torch, ours, inputs)
        assert (logits_of(torch, theirs, inputs) - expected).abs().max().item() <= 1e-5
        assert (logits_of(torch, reloaded, inputs) - expected).abs().max().item() <= 1e-5


def test_set_adapter_trains_only_the_active_one(make_model):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=2))
    model.add_adapter("other", peftplug.LoraConfig(r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)
    model.set_adapter("other")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".other." in n for n in trainable)


def test_disable_and_delete_adapter(torch, make_model):
    base_logits = logits_of(torch, make_model("llama"), model_inputs(torch, "llama"))
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(init_lora_weights=False))
    inputs = model_inputs(torch, "llama")
    adapted = logits_of(torch, model, inputs)
    assert (adapted - base_logits).abs().max() > 1e-4
    with model.disable_adapter():
        assert torch.equal(logits_of(torch, model, inputs), base_logits)
    assert torch.equal(logits_of(torch, model, inputs), adapted)
    model.add_adapter("second", peftplug.LoraConfig(init_lora_weights=False))
    model.delete_adapter("default")
    assert list(model.peft_config) == ["second"] and model.active_adapter == "second"
    assert not any(".default." in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_merge_and_unload_equals_unmerged(torch, make_model, family):
    from peftplug.backends.torch.layer import TorchAdapterLayer

    targets = {"llama": ["q_proj", "v_proj", "embed_tokens"], "gpt2": ["c_attn", "c_fc"], "t5": None, "bert": None}
    model = peftplug.get_peft_model(
        make_model(family),
        peftplug.LoraConfig(task_type=TASKS[family], target_modules=targets[family], init_lora_weights=False),
    )
    inputs = model_inputs(torch, family)
    unmerged = logits_of(torch, model, inputs)
    merged_model = model.merge_and_unload()
    assert not any(isinstance(m, TorchAdapterLayer) for m in merged_model.modules())
    assert not isinstance(merged_model, peftplug.PeftModel)
    assert (logits_of(torch, merged_model, inputs) - unmerged).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("family", "targets"), [("gpt2", ["c_attn", "c_fc"]), ("llama", ["q_proj", "embed_tokens"])])
def test_merge_then_unmerge_restores_base_weights(torch, make_model, family, targets):
    base = make_model(family)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = peftplug.get_peft_model(base, peftplug.LoraConfig(target_modules=targets, init_lora_weights=False))
    inputs = model_inputs(torch, family)
    unmerged = logits_of(torch, model, inputs)
    model.merge_adapter()
    assert (logits_of(torch, model, inputs) - unmerged).abs().max().item() <= 1e-5
    model.unmerge_adapter()
    after = model.unload().state_dict()
    assert max((after[k] - before[k]).abs().max().item() for k in before) <= 1e-6


def test_dropout_zero_is_identity_and_rslora_scales(make_model):
    from torch import nn

    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=4, lora_alpha=8, use_rslora=True))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.lora_dropout["default"], nn.Identity)
    assert layer.scaling["default"] == pytest.approx(8 / 2)
    dropped = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(lora_dropout=0.1))
    assert isinstance(dropped.base_model.model.model.layers[0].self_attn.q_proj.lora_dropout["default"], nn.Dropout)


def test_rank_pattern_and_layers_to_transform_match_peft(make_model):
    fields = {
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "rank_pattern": {"down_proj": 2},
        "alpha_pattern": {r"model\.layers\.1\.self_attn\.q_proj": 32},
        "layers_to_transform": [1],
    }
    ours, theirs = both(make_model, "llama", **fields)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    ours_q = ours.base_model.model.model.layers[1].self_attn.q_proj
    theirs_q = theirs.base_model.model.model.layers[1].self_attn.q_proj
    assert ours_q.scaling["default"] == theirs_q.scaling["default"]


def test_modules_to_save_round_trips_with_peft(torch, make_model, tmp_path):
    model = peftplug.get_peft_model(make_model("bert"), peftplug.LoraConfig(task_type="SEQ_CLS", r=2))
    assert model.peft_config["default"].modules_to_save == ["classifier", "score"]
    inputs = model_inputs(torch, "bert")
    train_steps(torch, model, inputs)
    model.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_model("bert"), tmp_path)
    assert (logits_of(torch, theirs, inputs) - logits_of(torch, model, inputs)).abs().max().item() <= 1e-5
    merged = model.merge_and_unload()
    assert (logits_of(torch, merged, inputs) - logits_of(torch, theirs, inputs)).abs().max().item() <= 1e-5


def test_generate_works_through_the_wrapper(torch, make_model):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(init_lora_weights=False))
    theirs = peft.get_peft_model(make_model("llama"), peft.LoraConfig(init_lora_weights=False))
    theirs.load_state_dict(model.state_dict())
    ids = model_inputs(torch, "llama")["input_ids"]
    ours_out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    theirs_out = theirs.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert ours_out.shape == (2, 12) and torch.equal(ours_out, theirs_out)


def test_trainer_trains_the_adapter(torch, make_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(r=4))
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 128, (12,), generator=generator).tolist()} for _ in range(16)]
    dataset = [dict(row, labels=row["input_ids"]) for row in rows]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    result = transformers.Trainer(model=model, args=args, train_dataset=dataset).train()
    assert result.global_step == 4
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[n], v) for n, v in before.items() if "lora_B" in n)
    assert all(torch.equal(params[n], v) for n, v in frozen.items())


def test_meta_device_injection_allocates_nothing(torch):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8, vocab_size=1000
    )
    with torch.device("meta"):
        base = transformers.LlamaForCausalLM(config)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = peftplug.get_peft_model(base, peftplug.LoraConfig(r=16, target_modules=targets))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.get_nb_trainable_parameters()[0] == 4 * 16 * (4 * (512 + 512) + 3 * (512 + 1024))


def test_hf_peft_state_dict_names_are_the_same(make_model):
    ours, theirs = both(make_model, "gpt2", target_modules=["c_attn", "wte"])
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())


def test_copy_of_a_peft_model_is_independent(torch, make_model):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(init_lora_weights=False))
    clone = copy.deepcopy(model)
    inputs = model_inputs(torch, "llama")
    assert torch.equal(logits_of(torch, clone, inputs), logits_of(torch, model, inputs))
