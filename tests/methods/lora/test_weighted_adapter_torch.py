"""``add_weighted_adapter`` on torch against HF PEFT's own, on identical adapters: ``linear``,
``cat`` and ``svd`` (with a rank and a clamp) on the four custom models' LoRA layers (Linear,
GPT-2 Conv1D, Embedding, Conv2d) give HF PEFT's tensors to 1e-5, added inactive and frozen."""

from __future__ import annotations

import warnings

import custom_models
import pytest

TARGETS = {"mlp": ["lin0"], "conv1d": ["conv1d"], "emb": ["emb"], "conv2d": ["conv2d"]}
COMBINATIONS = [
    ("w_linear", {"combination_type": "linear"}),
    ("w_cat", {"combination_type": "cat"}),
    ("w_svd", {"combination_type": "svd"}),
    ("w_svd_clamped", {"combination_type": "svd", "svd_rank": 3, "svd_clamp": 0.9}),
]


def hf_and_peftplug(torch, kind, tmp_path):
    """An HF PEFT model with two trained-looking adapters, and peftplug's with the same weights."""
    import peft

    import peftplug

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(
            custom_models.build(torch, kind), peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[kind])
        )
        hf.add_adapter("other", peft.LoraConfig(r=4, lora_alpha=16, target_modules=TARGETS[kind]))
    custom_models.randomise(torch, hf)
    hf.set_adapter("other")
    custom_models.randomise(torch, hf, seed=3)
    hf.set_adapter("default")
    hf.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(custom_models.build(torch, kind), tmp_path, is_trainable=True)
    ours.load_adapter(tmp_path / "other", "other")
    return hf, ours


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_combinations_give_hf_peft_tensors(torch, kind, tmp_path):
    hf, ours = hf_and_peftplug(torch, kind, tmp_path)
    for model in (hf, ours):
        for name, keywords in COMBINATIONS:
            model.add_weighted_adapter(["default", "other"], [0.7, -1.3], name, **keywords)
    theirs, mine = dict(hf.named_parameters()), dict(ours.named_parameters())
    assert mine.keys() == theirs.keys()
    for key, parameter in mine.items():
        assert torch.allclose(parameter, theirs[key], atol=1e-5), key
        assert parameter.requires_grad == theirs[key].requires_grad, key
    assert ours.peft_config["w_cat"].r == 8 and ours.peft_config["w_svd_clamped"].r == 3
    x = custom_models.inputs(torch, kind)
    for name, _ in COMBINATIONS:
        hf.set_adapter(name)
        ours.set_adapter(name)
        with torch.no_grad():
            assert torch.allclose(ours(x), hf(x), atol=1e-5), name


def test_bad_arguments_are_errors_naming_them_before_anything_changes(torch, tmp_path):
    from peftplug.errors import ConfigError, PeftplugError

    _, ours = hf_and_peftplug(torch, "mlp", tmp_path)
    names = set(dict(ours.named_parameters()))
    with pytest.raises(ConfigError, match="combination_type"):
        ours.add_weighted_adapter(["default", "other"], [1.0, 1.0], "x", combination_type="ties")
    with pytest.raises(ConfigError, match="weights"):
        ours.add_weighted_adapter(["default", "other"], [1.0], "x", combination_type="cat")
    with pytest.raises(PeftplugError, match="'missing'"):
        ours.add_weighted_adapter(["default", "missing"], [1.0, 1.0], "x", combination_type="cat")
    with pytest.raises(ConfigError, match="svd_rank"):
        ours.add_weighted_adapter(["default", "other"], [1.0, 1.0], "x", combination_type="svd", svd_rank=11)
    assert set(dict(ours.named_parameters())) == names and "x" not in ours.peft_config
