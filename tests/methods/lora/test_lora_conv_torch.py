"""LoRA on ``nn.Conv2d`` against the real HF PEFT: counts and names, files both ways with the
same outputs, merging to HF PEFT's weights, and the convolutions that are refused."""

from __future__ import annotations

import pytest
from torch_cnn import TARGETS, config, images, tiny_cnn, train

import peftplug
from peftplug.errors import PeftplugError

peft = pytest.importorskip("peft")


def test_counts_and_names_equal_hf_peft(torch):
    ours = peftplug.get_peft_model(tiny_cnn(torch), config(peftplug))
    theirs = peft.get_peft_model(tiny_cnn(torch), config(peft))
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert sorted((n, tuple(p.shape)) for n, p in ours.named_parameters() if p.requires_grad) == sorted(
        (n, tuple(p.shape)) for n, p in theirs.named_parameters() if p.requires_grad
    )


def test_adapters_go_both_ways_with_the_same_outputs(torch, tmp_path):
    ours = peftplug.get_peft_model(tiny_cnn(torch), config(peftplug))
    train(torch, ours)
    with torch.no_grad():
        expected = ours(images(torch))
        assert not torch.allclose(expected, tiny_cnn(torch)(images(torch))), "training had no effect"
    ours.save_pretrained(tmp_path / "ours")
    in_peft = peft.PeftModel.from_pretrained(tiny_cnn(torch), tmp_path / "ours")
    with torch.no_grad():
        assert torch.allclose(in_peft(images(torch)), expected, atol=1e-5, rtol=0)

    theirs = peft.get_peft_model(tiny_cnn(torch), config(peft))
    train(torch, theirs)
    theirs.save_pretrained(tmp_path / "theirs")
    in_ours = peftplug.PeftModel.from_pretrained(tiny_cnn(torch), tmp_path / "theirs")
    with torch.no_grad():
        assert torch.allclose(in_ours(images(torch)), theirs(images(torch)), atol=1e-5, rtol=0)


def test_merging_gives_hf_peft_weights_and_unmerging_restores(torch):
    theirs = peft.get_peft_model(tiny_cnn(torch), config(peft, init_lora_weights=False))
    ours = peftplug.get_peft_model(tiny_cnn(torch), config(peftplug))
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        unmerged = ours(images(torch))
    ours.merge_adapter()
    theirs.merge_adapter()
    mine, hf = ours.get_base_model().state_dict(), theirs.get_base_model().state_dict()
    for module in TARGETS:
        key = f"{module}.base_layer.weight"
        assert torch.allclose(mine[key], hf[key], atol=1e-6, rtol=0), key
    with torch.no_grad():
        assert torch.allclose(ours(images(torch)), unmerged, atol=1e-5, rtol=0)
    ours.unmerge_adapter()
    assert torch.allclose(
        ours.get_base_model().state_dict()["stem.base_layer.weight"], tiny_cnn(torch).stem.weight, atol=1e-6
    )
    merged = ours.merge_and_unload()
    assert type(merged.stem) is torch.nn.Conv2d
    with torch.no_grad():
        assert torch.allclose(merged(images(torch)), unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target_modules": ["grouped"]}, r"LoRA on grouped \(Conv2d, groups=2, dilation=\(1, 1\)\)"),
        ({"use_dora": True, "target_modules": ["stem"]}, r"LoRA on stem \(Conv2d, use_dora=True\)"),
    ],
    ids=["grouped", "dora"],
)
def test_what_conv2d_lora_does_not_cover_is_refused_naming_the_module(torch, fields, message):
    with pytest.raises(PeftplugError, match=message):
        peftplug.get_peft_model(tiny_cnn(torch), peftplug.LoraConfig(r=4, **fields))
