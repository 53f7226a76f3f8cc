"""IA3 on PyTorch against the real HF PEFT: counts, names, files both ways, merging, configs."""

from __future__ import annotations

import warnings

import pytest
from torch_lm import logits_of, model_inputs, train_steps

import peftplug
from peftplug.errors import ConfigError

peft = pytest.importorskip("peft")

FAMILIES = ["llama", "gpt2", "t5"]
TASKS = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM"}
# Explicit configs that differ from the family defaults; GPT-2's c_attn has a bias (merged too).
EXPLICIT = {
    "llama": {
        "target_modules": ["q_proj", "k_proj", "up_proj", "down_proj"],
        "feedforward_modules": ["up_proj", "down_proj"],
    },
    "gpt2": {"target_modules": ["c_attn", "c_fc", "c_proj"], "feedforward_modules": ["c_fc"]},
    "t5": {"target_modules": ["q", "o", "wi"], "feedforward_modules": ["wi"]},
}
REGEX = {
    "llama": {"target_modules": r".*\.(v_proj|gate_proj)", "feedforward_modules": r".*\.gate_proj"},
    "gpt2": {"target_modules": r".*\.(c_attn|c_proj)", "feedforward_modules": r".*\.mlp\.c_proj"},
    "t5": {"target_modules": r".*(SelfAttention\.k|wo)", "feedforward_modules": r".*wo"},
}
ALL_LINEAR = {"target_modules": "all-linear"}


def both(make_model, family, **fields):
    """The same base wrapped by peftplug and by peft with the same IA3 config."""
    fields.setdefault("task_type", TASKS[family])
    ours = peftplug.get_peft_model(make_model(family), peftplug.IA3Config(**fields))
    theirs = peft.get_peft_model(make_model(family), peft.IA3Config(**fields))
    return ours, theirs


def shapes(model) -> dict:
    """``{state-dict name: shape}`` of a model."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def random_biases(torch, model):
    """``model`` with every bias drawn at random (GPT-2 initialises them to zero, which would
    hide a bias left unscaled by a merge)."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def adapter_layer_count(model) -> int:
    """How many peftplug adapter layers ``model`` holds."""
    from peftplug.backends.torch.layer import TorchAdapterLayer

    return sum(isinstance(m, TorchAdapterLayer) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["defaults", "explicit", "regex", "all-linear"])
def test_parameter_counts_and_names_equal_hf_peft(make_model, family, kind):
    fields = {"defaults": {}, "explicit": EXPLICIT[family], "regex": REGEX[family], "all-linear": ALL_LINEAR}[kind]
    ours, theirs = both(make_model, family, **fields)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert ours.get_nb_trainable_parameters()[0] > 0
    assert sorted(n for n, p in ours.named_parameters() if p.requires_grad) == sorted(
        n for n, p in theirs.named_parameters() if p.requires_grad
    )
    # Same names and shapes: which vectors scale inputs ([1, in]) and which outputs ([out, 1]).
    assert shapes(ours) == shapes(theirs)


def test_defaults_follow_hf_peft_on_a_gqa_llama(make_model):
    """Llama's defaults are k_proj, v_proj (outputs, 16 wide with 2 of 4 heads) and down_proj (input)."""
    ours, theirs = both(make_model, "llama")
    config = ours.peft_config["default"]
    assert sorted(config.target_modules) == sorted(theirs.peft_config["default"].target_modules)
    assert config.feedforward_modules == ["down_proj"]
    layer = ours.base_model.model.model.layers[0]
    assert tuple(layer.self_attn.k_proj.ia3_l["default"].shape) == (16, 1)
    assert tuple(layer.self_attn.v_proj.ia3_l["default"].shape) == (16, 1)
    assert tuple(layer.mlp.down_proj.ia3_l["default"].shape) == (1, 64)
    assert layer.mlp.down_proj.is_feedforward["default"] and not layer.self_attn.k_proj.is_feedforward["default"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fresh_adapter_changes_nothing(torch, make_model, family):
    model = peftplug.get_peft_model(make_model(family), peftplug.IA3Config(task_type=TASKS[family]))
    inputs = model_inputs(torch, family)
    assert adapter_layer_count(model) > 0
    assert torch.equal(logits_of(torch, model, inputs), logits_of(torch, make_model(family), inputs))


def _generate(model, ids):
    return model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_peftplug_adapter_loads_in_peft_with_same_logits(torch, make_model, family, tmp_path):
    model = peftplug.get_peft_model(make_model(family), peftplug.IA3Config(task_type=TASKS[family], **EXPLICIT[family]))
    inputs = model_inputs(torch, family)
    train_steps(torch, model, inputs)
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(make_model(family), tmp_path)
    expected = logits_of(torch, model, inputs)
    assert not torch.allclose(expected, logits_of(torch, make_model(family), inputs)), "training had no effect"
    assert (logits_of(torch, loaded, inputs) - expected).abs().max().item() <= 1e-5
    if TASKS[family] == "CAUSAL_LM":
        ids = inputs["input_ids"]
        assert torch.equal(_generate(model, ids), _generate(loaded, ids))


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_loads_in_peftplug_with_same_logits(torch, make_model, family, tmp_path):
    theirs = peft.get_peft_model(make_model(family), peft.IA3Config(task_type=TASKS[family]))
    inputs = model_inputs(torch, family)
    train_steps(torch, theirs, inputs)
    theirs.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(make_model(family), tmp_path)
    assert isinstance(ours.peft_config["default"], peftplug.IA3Config)
    expected = logits_of(torch, theirs, inputs)
    assert not torch.allclose(expected, logits_of(torch, make_model(family), inputs)), "training had no effect"
    assert (logits_of(torch, ours, inputs) - expected).abs().max().item() <= 1e-5
    assert ours.get_nb_trainable_parameters()[0] == 0, "loaded for inference: nothing trainable"
    if TASKS[family] == "CAUSAL_LM":
        ids = inputs["input_ids"]
        assert torch.equal(_generate(ours, ids), _generate(theirs, ids))


@pytest.mark.parametrize("family", FAMILIES)
def test_merge_and_unload_equals_unmerged_and_hf_peft_merge(torch, make_model, family):
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    model = peftplug.get_peft_model(
        random_biases(torch, make_model(family)),
        peftplug.IA3Config(task_type=TASKS[family], init_ia3_weights=False, **EXPLICIT[family]),
    )
    theirs = peft.get_peft_model(
        random_biases(torch, make_model(family)), peft.IA3Config(task_type=TASKS[family], **EXPLICIT[family])
    )
    theirs.load_state_dict(model.state_dict())
    inputs = model_inputs(torch, family)
    unmerged = logits_of(torch, model, inputs)
    assert not torch.allclose(unmerged, logits_of(torch, make_model(family), inputs)), "random vectors had no effect"
    merged_model = model.merge_and_unload()
    assert adapter_layer_count(merged_model) == 0 and not isinstance(merged_model, peftplug.PeftModel)
    names = EXPLICIT[family]["target_modules"]
    targeted = [m for n, m in merged_model.named_modules() if n.rsplit(".", 1)[-1] in names]
    assert targeted and all(type(m) in (nn.Linear, Conv1D) for m in targeted)
    assert (logits_of(torch, merged_model, inputs) - unmerged).abs().max().item() <= 1e-5
    # Columns or rows (and the bias) scaled exactly as HF PEFT scales them.
    reference = theirs.merge_and_unload().state_dict()
    merged = merged_model.state_dict()
    assert merged.keys() == reference.keys()
    assert max((merged[k] - reference[k]).abs().max().item() for k in merged) <= 1e-6


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_unmerge_warns_and_restores_the_weights(torch, make_model, family):
    base = random_biases(torch, make_model(family))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = peftplug.get_peft_model(base, peftplug.IA3Config(init_ia3_weights=False, **EXPLICIT[family]))
    inputs = model_inputs(torch, family)
    unmerged = logits_of(torch, model, inputs)
    model.merge_adapter()
    assert (logits_of(torch, model, inputs) - unmerged).abs().max().item() <= 1e-5
    with pytest.warns(UserWarning, match="unmerging IA3 is inexact"):
        model.unmerge_adapter()
    assert (logits_of(torch, model, inputs) - unmerged).abs().max().item() <= 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing merged any more: unloading must not warn
        after = model.unload().state_dict()
    assert max(((after[k] - before[k]).abs() / (before[k].abs() + 1e-3)).max().item() for k in before) <= 1e-4


def test_forward_scales_inputs_of_feedforward_modules_and_outputs_of_others(torch):
    from torch import nn

    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    for feedforward, expected_shape in [([], (3, 1)), (["0"], (1, 4))]:
        model = peftplug.get_peft_model(
            nn.Sequential(linear), peftplug.IA3Config(target_modules=["0"], feedforward_modules=feedforward)
        )
        layer = model.base_model.model[0]
        vector = layer.ia3_l["default"]
        assert tuple(vector.shape) == expected_shape and torch.equal(vector, torch.ones(expected_shape))
        with torch.no_grad():
            vector.copy_(torch.arange(2.0, 2.0 + vector.numel()).reshape(expected_shape))
            got = layer(x)
        scale = vector.detach().flatten()
        expected = linear(x * scale) if feedforward else linear(x) * scale
        assert torch.allclose(got, expected)
        with model.disable_adapter():
            assert torch.equal(model.base_model.model(x), linear(x))
        model.unload()


def test_feedforward_modules_must_be_a_subset_of_target_modules():
    with pytest.raises(ConfigError, match=r"not in target_modules: \['down_proj', 'up_proj'\]") as caught:
        peftplug.IA3Config(target_modules=["q_proj", "v_proj"], feedforward_modules=["v_proj", "up_proj", "down_proj"])
    assert caught.value.field == "feedforward_modules"
    with pytest.raises(ValueError, match="subset"):  # HF PEFT refuses the same config
        peft.IA3Config(target_modules=["q_proj", "v_proj"], feedforward_modules=["v_proj", "up_proj", "down_proj"])
    with pytest.raises(ConfigError, match="feedforward_modules"):
        peftplug.IA3Config.from_dict({"peft_type": "IA3", "target_modules": ["k"], "feedforward_modules": ["wo"]})
    # A regex on either side is not checked, as in HF PEFT.
    assert peftplug.IA3Config(target_modules=".*", feedforward_modules=["wo"]).feedforward_modules == ["wo"]
    assert peftplug.IA3Config(target_modules=["k"], feedforward_modules=".*wo").feedforward_modules == ".*wo"


def test_explicit_targets_keep_only_the_default_feedforward_modules_they_hold(torch, make_model, tmp_path):
    """HF PEFT fills feedforward_modules=["down_proj"] here and then cannot read its own
    adapter_config.json back; peftplug leaves the untargeted name out, adapting the same modules."""
    ours, theirs = both(make_model, "llama", target_modules=["q_proj", "v_proj"])
    assert ours.peft_config["default"].feedforward_modules == []
    assert shapes(ours) == shapes(theirs)
    kept, _ = both(make_model, "llama", target_modules=["q_proj", "down_proj"])
    assert kept.peft_config["default"].feedforward_modules == ["down_proj"]

    inputs = model_inputs(torch, "llama")
    train_steps(torch, ours, inputs)
    ours.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    assert (logits_of(torch, loaded, inputs) - logits_of(torch, ours, inputs)).abs().max().item() <= 1e-5


def test_a_model_without_defaults_asks_for_targets_and_feedforward_modules(torch):
    from torch import nn

    with pytest.raises(ConfigError, match="target_modules=None.*no default targets for model_type None"):
        peftplug.get_peft_model(nn.Sequential(nn.Linear(4, 4)), peftplug.IA3Config())
    with pytest.raises(ConfigError, match="feedforward_modules=None.*set feedforward_modules"):
        peftplug.get_peft_model(nn.Sequential(nn.Linear(4, 4)), peftplug.IA3Config(target_modules=["0"]))


def test_lora_defaults_are_unchanged_by_the_ia3_entries(make_model):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig())
    assert model.peft_config["default"].target_modules == ["q_proj", "v_proj"]


def test_named_adapters_round_trip_with_peft(torch, make_model, tmp_path):
    inputs = model_inputs(torch, "gpt2")
    other = {"target_modules": ["c_attn", "c_fc", "mlp.c_proj"], "feedforward_modules": ["c_fc", "mlp.c_proj"]}
    ours = peftplug.get_peft_model(make_model("gpt2"), peftplug.IA3Config(init_ia3_weights=False))
    ours.add_adapter("other", peftplug.IA3Config(init_ia3_weights=False, **other))
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()
    theirs = peft.PeftModel.from_pretrained(make_model("gpt2"), tmp_path)
    theirs.load_adapter(tmp_path / "other", adapter_name="other")
    for name in ["default", "other"]:
        ours.set_adapter(name)
        theirs.set_adapter(name)
        assert (logits_of(torch, theirs, inputs) - logits_of(torch, ours, inputs)).abs().max().item() <= 1e-5


def test_each_adapter_follows_its_own_feedforward_modules(torch, make_model, tmp_path):
    """A second adapter treating a shared module differently gets its own vector orientation
    (HF PEFT reuses the first adapter's), so its file loads on its own in HF PEFT."""
    ours = peftplug.get_peft_model(make_model("gpt2"), peftplug.IA3Config(init_ia3_weights=False))
    ours.add_adapter("other", peftplug.IA3Config(init_ia3_weights=False, **EXPLICIT["gpt2"]))
    c_proj = ours.base_model.model.transformer.h[0].mlp.c_proj
    assert tuple(c_proj.ia3_l["default"].shape) == (1, 128) and tuple(c_proj.ia3_l["other"].shape) == (32, 1)
    ours.set_adapter("other")
    ours.save_pretrained(tmp_path, selected_adapters=["other"])
    theirs = peft.PeftModel.from_pretrained(make_model("gpt2"), tmp_path / "other")
    inputs = model_inputs(torch, "gpt2")
    assert (logits_of(torch, theirs, inputs) - logits_of(torch, ours, inputs)).abs().max().item() <= 1e-5


def test_config_file_round_trips_with_peft(tmp_path):
    ours = peftplug.IA3Config(task_type="CAUSAL_LM", **EXPLICIT["llama"])
    ours.save_pretrained(tmp_path / "ours")
    theirs = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert isinstance(theirs, peft.IA3Config)
    assert (sorted(theirs.target_modules), sorted(theirs.feedforward_modules)) == (
        sorted(EXPLICIT["llama"]["target_modules"]),
        sorted(EXPLICIT["llama"]["feedforward_modules"]),
    )
    theirs.save_pretrained(tmp_path / "theirs")
    back = peftplug.AdapterConfig.from_pretrained(tmp_path / "theirs")
    assert isinstance(back, peftplug.IA3Config) and back.init_ia3_weights is True
    assert sorted(back.feedforward_modules) == sorted(EXPLICIT["llama"]["feedforward_modules"])
