"""``init_lora_weights`` ``"gaussian"``, ``"pissa"``, ``"pissa_niter_N"`` and ``"olora"`` on torch
against HF PEFT: the same seed gives the same adapter and the same residual base weight; the
randomised ``pissa_niter_N`` is held to its reconstruction property; a saved PiSSA adapter loads in
HF PEFT with equal outputs; initialisations peftplug lacks, and PiSSA on a Conv2d, are errors."""

from __future__ import annotations

import warnings

import custom_models
import pytest

TARGETS = {"mlp": ["lin0", "lin1"], "conv1d": ["conv1d"]}
CASES = [
    ("mlp", "gaussian"),
    ("mlp", "pissa"),
    ("mlp", "olora"),
    ("conv1d", "gaussian"),
    ("conv1d", "pissa"),
]


def adapted(torch, library, kind, init, **fields):
    """``kind`` with a LoRA adapter initialised by ``init``, built with ``library`` from seed 5."""
    torch.manual_seed(5)
    base = custom_models.build(torch, kind)
    torch.manual_seed(5)
    config = library.LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS[kind], init_lora_weights=init, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return library.get_peft_model(base, config)


@pytest.mark.parametrize(("kind", "init"), CASES)
def test_initialisation_gives_hf_peft_weights(torch, kind, init):
    import peft

    import peftplug

    theirs = dict(adapted(torch, peft, kind, init).named_parameters())
    ours = adapted(torch, peftplug, kind, init)
    mine = dict(ours.named_parameters())
    assert mine.keys() == theirs.keys()
    for key, parameter in mine.items():
        assert torch.allclose(parameter, theirs[key], atol=1e-6), key
    x = custom_models.inputs(torch, kind)
    with torch.no_grad():
        assert torch.allclose(ours(x), custom_models.build(torch, kind)(x), atol=1e-5)  # starts as the base


def test_pissa_niter_keeps_the_weight_and_takes_its_top_singular_directions(torch):
    import peftplug

    original = custom_models.build(torch, "mlp").lin0.weight.detach().clone()
    layer = adapted(torch, peftplug, "mlp", "pissa_niter_4").base_model.model.lin0
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    low_rank = layer.scaling["default"] * b @ a
    assert torch.allclose(layer.base_layer.weight + low_rank, original, atol=1e-5)
    top = torch.linalg.svdvals(original)[:2]
    assert torch.allclose(torch.linalg.svdvals(low_rank)[:2], top, rtol=1e-2)  # randomised: within 1%


def test_a_saved_pissa_adapter_loads_in_hf_peft_with_equal_outputs(torch, tmp_path):
    import peft

    import peftplug

    model = adapted(torch, peftplug, "mlp", "pissa")
    custom_models.randomise(torch, model)
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(custom_models.build(torch, "mlp"), tmp_path)
    x = custom_models.inputs(torch, "mlp")
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_initialisations_it_lacks_are_errors_naming_the_field(torch):
    import peftplug
    from peftplug.errors import ConfigError

    with pytest.raises(ConfigError, match="init_lora_weights='loftq'"):
        peftplug.LoraConfig(target_modules=["lin0"], init_lora_weights="loftq")
    base = custom_models.build(torch, "conv2d")
    before = base.conv2d.weight.detach().clone()
    with pytest.raises(ConfigError, match="init_lora_weights.*conv2d"):
        peftplug.get_peft_model(base, peftplug.LoraConfig(target_modules=["conv2d"], init_lora_weights="pissa"))
    assert torch.equal(base.conv2d.weight, before)
