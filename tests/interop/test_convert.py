"""Converting adapters between HF PEFT (PyTorch) and PaddleNLP (Paddle): peftplug.convert and
loading across frameworks, checked on the logits of tiny models carrying the same base weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from convert_models import (
    BLOOM_METHODS,
    IDS,
    METHODS,
    assert_changed,
    assert_close,
    gpt2_twins,
    hf_model,
    paddle_logits,
    paddle_model,
    torch_logits,
    train_torch,
    trained_on_paddle,
    trained_on_torch,
)

import peftplug
from peftplug.adapter_io import read_adapter
from peftplug.interop.convert import ConversionError

CASES = [("llama", m) for m in METHODS] + [("bloom", m) for m in BLOOM_METHODS]


# ---------------------------------------------------------------- torch -> paddle, paddle -> torch
@pytest.mark.parametrize("family, method", CASES)
def test_torch_trained_adapter_converts_and_loads_on_paddlenlp(torch, paddle, family, method, tmp_path):
    model, expected = trained_on_torch(torch, family, method)
    pd_base, pd_base2 = (paddle_model(paddle, family, hf_model(torch, family)) for _ in range(2))
    model.save_pretrained(tmp_path / "torch")

    peftplug.convert(
        tmp_path / "torch", tmp_path / "paddle", to="paddlenlp", architecture=family, base_config=model.config
    )
    converted = peftplug.PeftModel.from_pretrained(pd_base, tmp_path / "paddle")
    assert_close(paddle_logits(paddle, converted), expected, "converted")

    direct = peftplug.PeftModel.from_pretrained(pd_base2, tmp_path / "torch")
    assert_close(paddle_logits(paddle, direct), expected, "loaded directly")


@pytest.mark.parametrize("family, method", CASES)
def test_paddle_trained_adapter_converts_and_loads_on_torch(torch, paddle, family, method, tmp_path):
    pd, model, expected = trained_on_paddle(torch, paddle, family, method)
    model.save_pretrained(tmp_path / "paddle_hf_format")
    model.save_pretrained(tmp_path / "paddle", format="paddlenlp")

    for source in ("paddle", "paddle_hf_format"):
        peftplug.convert(
            tmp_path / source, tmp_path / f"{source}_to_peft", to="peft", architecture=family, base_config=pd.config
        )
        converted = peftplug.PeftModel.from_pretrained(hf_model(torch, family), tmp_path / f"{source}_to_peft")
        assert_close(torch_logits(torch, converted), expected, f"converted from {source}")
        direct = peftplug.PeftModel.from_pretrained(hf_model(torch, family), tmp_path / source)
        assert_close(torch_logits(torch, direct), expected, f"loaded directly from {source}")


# ---------------------------------------------------------------- against the real libraries
def test_a_paddlenlp_lora_converts_for_real_peft(torch, paddle, tmp_path):
    from paddlenlp.peft import LoRAConfig, LoRAModel
    from peft import PeftModel

    hf = hf_model(torch, "llama")
    pd = paddle_model(paddle, "llama", hf)
    theirs = LoRAModel(pd, LoRAConfig(target_modules=[".*q_proj", ".*v_proj", ".*down_proj"], r=4, lora_alpha=8))
    rng = np.random.default_rng(3)
    for name, parameter in theirs.named_parameters():
        if "lora_B" in name:
            parameter.set_value(paddle.to_tensor(rng.normal(0, 0.3, parameter.shape).astype("float32")))
    theirs.eval()
    expected = paddle_logits(paddle, theirs)
    theirs.save_pretrained(str(tmp_path / "paddlenlp"))

    peftplug.convert(tmp_path / "paddlenlp", tmp_path / "peft", to="peft")  # family from the llama. names
    loaded = PeftModel.from_pretrained(hf_model(torch, "llama"), str(tmp_path / "peft")).eval()
    assert_changed(expected, torch_logits(torch, hf))
    assert_close(torch_logits(torch, loaded), expected, "real peft on a converted PaddleNLP LoRA")
    direct = peftplug.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / "paddlenlp")
    assert_close(torch_logits(torch, direct), expected, "PaddleNLP's own files loaded directly on torch")


def test_a_real_peft_lora_converts_for_paddlenlp(torch, paddle, tmp_path):
    import peft
    from paddlenlp.peft import LoRAModel

    hf = hf_model(torch, "llama")
    pd_base = paddle_model(paddle, "llama", hf)
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, parameter in theirs.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    theirs.eval()
    expected = torch_logits(torch, theirs)
    theirs.save_pretrained(tmp_path / "peft")

    peftplug.convert(tmp_path / "peft", tmp_path / "paddlenlp", to="paddlenlp", architecture="llama")
    loaded = LoRAModel.from_pretrained(pd_base, str(tmp_path / "paddlenlp"))
    loaded.eval()
    assert_close(paddle_logits(paddle, loaded), expected, "PaddleNLP on a converted HF PEFT LoRA")


# ---------------------------------------------------------------- fused projections
def test_fused_qkv_and_ffn_give_the_unfused_adapters_logits(torch, paddle, tmp_path):
    hf = hf_model(torch, "llama")
    fused_base = paddle_model(paddle, "llama", hf, fuse_attention_qkv=True, fuse_attention_ffn=True)
    fused_base2 = paddle_model(paddle, "llama", hf, fuse_attention_qkv=True, fuse_attention_ffn=True)
    config = peftplug.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "gate_proj", "down_proj"]
    )
    model = peftplug.get_peft_model(hf, config)
    train_torch(torch, model)
    expected = torch_logits(torch, model)
    model.save_pretrained(tmp_path / "torch")

    peftplug.convert(tmp_path / "torch", tmp_path / "fused", to="paddlenlp", base_config=fused_base.config)
    state = read_adapter(tmp_path / "fused")
    assert state.config.r == 12 and state.config.lora_alpha == 24, "rank tripled, scaling kept"
    assert sorted(state.config.target_modules) == ["down_proj", "gate_up_fused_proj", "qkv_proj"]
    assert state.tensors["base_model.model.llama.layers.0.self_attn.qkv_proj.lora_B.weight"].shape == (64, 12)
    converted = peftplug.PeftModel.from_pretrained(fused_base, tmp_path / "fused")
    assert_close(paddle_logits(paddle, converted), expected, "fused qkv / gate-up")
    direct = peftplug.PeftModel.from_pretrained(fused_base2, tmp_path / "torch")
    assert_close(paddle_logits(paddle, direct), expected, "fused, loaded directly")

    peftplug.convert(tmp_path / "fused", tmp_path / "back", to="peft", base_config=fused_base.config)
    assert_bit_identical(tmp_path / "torch", tmp_path / "back")


def test_a_fused_adapter_trained_on_paddle_splits_exactly(torch, paddle, tmp_path):
    """A LoRA trained on the fused qkv_proj is not block-diagonal: each part keeps A whole."""
    hf = hf_model(torch, "llama")
    fused = paddle_model(paddle, "llama", hf, fuse_attention_qkv=True)
    model = peftplug.get_peft_model(
        fused, peftplug.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"])
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.set_value(
                paddle.to_tensor(np.random.default_rng(5).normal(0, 0.3, parameter.shape).astype("float32"))
            )
    expected = paddle_logits(paddle, model)
    model.save_pretrained(tmp_path / "fused")
    peftplug.convert(tmp_path / "fused", tmp_path / "peft", to="peft", base_config=fused.config)
    state = read_adapter(tmp_path / "peft")
    assert state.config.r == 4 and sorted(state.config.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    loaded = peftplug.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / "peft")
    assert_close(torch_logits(torch, loaded), expected, "fused -> separate q, k, v")


# ---------------------------------------------------------------- round trips
def assert_bit_identical(first: Path, second: Path) -> None:
    a, b = read_adapter(first), read_adapter(second)
    assert set(a.tensors) == set(b.tensors) and set(a.extra_tensors) == set(b.extra_tensors)
    for key in a.tensors:
        assert a.tensors[key].dtype == b.tensors[key].dtype and np.array_equal(a.tensors[key], b.tensors[key]), key
    for key in a.extra_tensors:
        assert np.array_equal(a.extra_tensors[key], b.extra_tensors[key]), key


@pytest.mark.parametrize("method", [m for m in METHODS if not m.startswith("prefix")])
def test_to_paddlenlp_and_back_is_bit_identical(torch, method, tmp_path):
    model = peftplug.get_peft_model(hf_model(torch, "llama"), METHODS[method]())
    train_torch(torch, model)
    model.save_pretrained(tmp_path / "torch")
    peftplug.convert(tmp_path / "torch", tmp_path / "paddle", to="paddlenlp", architecture="llama")
    peftplug.convert(tmp_path / "paddle", tmp_path / "back", to="peft")
    assert_bit_identical(tmp_path / "torch", tmp_path / "back")
    before, after = read_adapter(tmp_path / "torch").config, read_adapter(tmp_path / "back").config
    fields = (
        "target_modules",
        "feedforward_modules",
        "modules_to_save",
        "r",
        "lora_alpha",
        "num_virtual_tokens",
        "task_type",
    )
    assert before.task_type == "CAUSAL_LM"
    for field in fields:
        assert getattr(before, field, None) == getattr(after, field, None), field


@pytest.mark.parametrize("method", ["prefix", "prefix_projection"])
def test_a_prefix_round_trip_is_exact_up_to_float_rounding(torch, method, tmp_path):
    """RoPE keys are rotated by -T and back by +T (float64, cast to float32 each way), so a
    prefix adapter of a RoPE family comes back up to float32 rounding, not bit-identical."""
    hf = hf_model(torch, "llama")
    model = peftplug.get_peft_model(hf, METHODS[method]())
    train_torch(torch, model)
    model.save_pretrained(tmp_path / "torch")
    peftplug.convert(
        tmp_path / "torch", tmp_path / "paddle", to="paddlenlp", architecture="llama", base_config=hf.config
    )
    peftplug.convert(tmp_path / "paddle", tmp_path / "back", to="peft", architecture="llama", base_config=hf.config)
    a, b = read_adapter(tmp_path / "torch"), read_adapter(tmp_path / "back")
    assert set(a.tensors) == set(b.tensors) and set(a.extra_tensors) == set(b.extra_tensors)
    for key, value in [*a.tensors.items(), *a.extra_tensors.items()]:
        other = b.tensors.get(key, b.extra_tensors.get(key))
        assert np.abs(value - other).max() <= 1e-6 * max(1.0, np.abs(value).max()), key
    rotated = read_adapter(tmp_path / "paddle").tensors["prompt_embeddings"]
    assert np.abs(rotated - a.tensors["prompt_embeddings"]).max() > 1e-3, "the keys were rotated"


# ---------------------------------------------------------------- errors, and dst left whole
def existing_dst(tmp_path: Path) -> Path:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "adapter_config.json").write_text('{"old": true}')
    return dst


def assert_untouched(dst: Path) -> None:
    assert sorted(p.name for p in dst.iterdir()) == ["adapter_config.json"]
    assert (dst / "adapter_config.json").read_text() == '{"old": true}'


def saved_lora(torch, tmp_path: Path) -> Path:
    model = peftplug.get_peft_model(hf_model(torch, "llama"), METHODS["lora"]())
    model.save_pretrained(tmp_path / "src")
    return tmp_path / "src"


def test_an_ambiguous_family_asks_for_architecture(torch, tmp_path):
    src, dst = saved_lora(torch, tmp_path), existing_dst(tmp_path)
    with pytest.raises(ConversionError, match=r"several architectures: llama \(hf names\).*qwen2.*architecture="):
        peftplug.convert(src, dst, to="paddlenlp")
    assert_untouched(dst)


def test_the_family_comes_from_the_local_base_model_the_adapter_names(torch, tmp_path):
    """The README's own example: no architecture=, the family read from the config.json of the
    local model that ``base_model_name_or_path`` names."""
    hf = hf_model(torch, "llama")
    hf.save_pretrained(tmp_path / "llama-base")
    config = METHODS["lora"]()
    config.base_model_name_or_path = str(tmp_path / "llama-base")
    peftplug.get_peft_model(hf, config).save_pretrained(tmp_path / "src")
    peftplug.convert(tmp_path / "src", tmp_path / "pd", to="paddlenlp")
    assert any(key.startswith("base_model.model.llama.layers.0.") for key in read_adapter(tmp_path / "pd").tensors)


@pytest.mark.parametrize("named, family", [("Qwen/Qwen2-0.5B", "qwen2"), ("meta-llama/Llama-2-7b-hf", "llama")])
def test_a_base_model_name_settles_families_that_share_module_names(torch, tmp_path, named, family):
    model = peftplug.get_peft_model(hf_model(torch, "llama"), METHODS["lora"]())
    model.peft_config["default"].base_model_name_or_path = named
    model.save_pretrained(tmp_path / "src")
    peftplug.convert(tmp_path / "src", tmp_path / "pd", to="paddlenlp")
    assert any(key.startswith(f"base_model.model.{family}.layers.0.") for key in read_adapter(tmp_path / "pd").tensors)


def test_a_wrong_family_names_the_tensor(torch, tmp_path):
    src, dst = saved_lora(torch, tmp_path), existing_dst(tmp_path)
    with pytest.raises(ConversionError, match=r"model\.layers\.0\..*'bloom'"):
        peftplug.convert(src, dst, to="paddlenlp", architecture="bloom")
    assert_untouched(dst)


def test_an_unknown_family_lists_the_known_ones(tmp_path):
    dst = existing_dst(tmp_path)
    state = peftplug.adapter_io.AdapterState(
        peftplug.LoraConfig(r=2, target_modules=["x"]),
        {
            "base_model.model.encoder.block.0.x.lora_A.weight": np.zeros((2, 4), "f4"),
            "base_model.model.encoder.block.0.x.lora_B.weight": np.zeros((4, 2), "f4"),
        },
    )
    peftplug.adapter_io.write_adapter(state, tmp_path / "src")
    with pytest.raises(ConversionError, match=r"cannot tell the model family.*bloom, gpt2, llama, qwen2"):
        peftplug.convert(tmp_path / "src", dst, to="paddlenlp")
    assert_untouched(dst)


def test_a_module_the_other_side_lacks_is_named(torch, tmp_path):
    src, dst = saved_lora(torch, tmp_path), existing_dst(tmp_path)
    state = read_adapter(src)
    state.tensors["base_model.model.model.layers.0.self_attn.rotary_emb.lora_A.weight"] = np.zeros((4, 8), "f4")
    state.tensors["base_model.model.model.layers.0.self_attn.rotary_emb.lora_B.weight"] = np.zeros((8, 4), "f4")
    peftplug.adapter_io.write_adapter(state, src)
    with pytest.raises(
        ConversionError, match=r"tensor 'base_model\.model\.model\.layers\.0\.self_attn\.rotary_emb\.lora_[AB]\.weight'"
    ):
        peftplug.convert(src, dst, to="paddlenlp", architecture="llama")
    assert_untouched(dst)


def test_a_shape_mismatch_names_the_tensors_and_both_shapes(torch, tmp_path):
    src, dst = saved_lora(torch, tmp_path), existing_dst(tmp_path)
    state = read_adapter(src)
    key = "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"
    state.tensors[key] = np.zeros((16, 3), "f4")
    peftplug.adapter_io.write_adapter(state, src)
    with pytest.raises(
        ConversionError,
        match=r"k_proj\.lora_A\.weight' has shape \[4, 32\] and .*k_proj\.lora_B\.weight' has shape \[16, 3\]",
    ):
        peftplug.convert(src, dst, to="paddlenlp", architecture="llama")
    assert_untouched(dst)


def test_a_prefix_adapter_needs_its_family_and_rope(torch, tmp_path):
    model = peftplug.get_peft_model(hf_model(torch, "llama"), METHODS["prefix"]())
    model.save_pretrained(tmp_path / "src")
    dst = existing_dst(tmp_path)
    with pytest.raises(
        ConversionError,
        match=r"cannot tell the model family: a prefix-tuning adapter names no module; pass architecture=",
    ):
        peftplug.convert(tmp_path / "src", dst, to="paddlenlp")
    with pytest.raises(
        peftplug.interop.prefix_positions.PrefixConversionError,
        match=r"qwen2 prefix adapter needs the base model's rope_theta",
    ):
        peftplug.convert(tmp_path / "src", dst, to="paddlenlp", architecture="qwen2")
    with pytest.raises(peftplug.interop.prefix_positions.PrefixConversionError, match=r"rope_scaling"):
        peftplug.convert(
            tmp_path / "src",
            dst,
            to="paddlenlp",
            base_config={"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}},
        )
    assert_untouched(dst)
    with pytest.warns(UserWarning, match=r"default rope_theta=10000"):
        peftplug.convert(tmp_path / "src", dst, to="paddlenlp", architecture="llama")
    assert (dst / "prefix_config.json").is_file()


def test_to_must_name_a_library(torch, tmp_path):
    with pytest.raises(ConversionError, match=r"to='torch'"):
        peftplug.convert(saved_lora(torch, tmp_path), tmp_path / "dst", to="torch")
    assert not (tmp_path / "dst").exists()


def test_same_library_leaves_the_tree(torch, tmp_path):
    """A PaddleNLP-tree adapter converted to paddlenlp keeps its names (nothing to move)."""
    src = saved_lora(torch, tmp_path)
    peftplug.convert(src, tmp_path / "pd", to="paddlenlp", architecture="llama")
    peftplug.convert(tmp_path / "pd", tmp_path / "pd2", to="paddlenlp")
    assert_bit_identical(tmp_path / "pd", tmp_path / "pd2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_adapter(tmp_path / "pd2").config.target_modules == read_adapter(src).config.target_modules


# ---------------------------------------------------------------- command line
def test_the_convert_command(torch, tmp_path, capsys):
    from peftplug.app.cli import main

    src = saved_lora(torch, tmp_path)
    assert main(["convert", str(src), str(tmp_path / "pd"), "--to", "paddlenlp", "--architecture", "llama"]) == 0
    assert "lora_config.json, lora_model_state.pdparams" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "pd"), str(tmp_path / "back"), "--to", "peft"]) == 0
    assert_bit_identical(src, tmp_path / "back")
    dst = existing_dst(tmp_path)
    assert main(["convert", str(src), str(dst), "--to", "paddlenlp"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("peftplug convert: error: cannot tell the model family") and error.count("\n") == 1
    assert "pass --architecture to choose" in error and "architecture=" not in error, "the command's flag is named"
    assert_untouched(dst)
    assert main(["convert", str(src), str(dst), "--to", "torch"]) == 2
    assert "--to: invalid choice: 'torch'" in capsys.readouterr().err
    assert main(["convert", "--help"]) == 0
    assert "peftplug convert torch-lora paddle-lora --to paddlenlp" in capsys.readouterr().out


def test_gpt2_c_attn_lora_splits_into_paddlenlp_q_k_v_and_back(torch, paddle, tmp_path):
    """GPT-2's fused c_attn (Conv1D) is PaddleNLP GPT's q_proj, k_proj, v_proj: each part keeps
    lora_A and takes its rows of lora_B; joining them back shares the identical A (rank kept)."""
    hf, pd = gpt2_twins(torch, paddle)
    model = peftplug.get_peft_model(
        hf, peftplug.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    train_torch(torch, model)
    expected = torch_logits(torch, model)
    model.save_pretrained(tmp_path / "torch")
    peftplug.convert(tmp_path / "torch", tmp_path / "paddle", to="paddlenlp")  # family from transformer.h names
    state = read_adapter(tmp_path / "paddle")
    assert state.config.target_modules == ["q_proj", "k_proj", "v_proj"] and state.config.r == 4
    assert not state.config.fan_in_fan_out
    with paddle.no_grad():
        logits = peftplug.PeftModel.from_pretrained(pd, tmp_path / "paddle")(input_ids=paddle.to_tensor(IDS))
    got = (logits[0] if isinstance(logits, (tuple, list)) else getattr(logits, "logits", logits)).numpy()
    assert_close(got, expected, "GPT-2 c_attn -> q/k/v")
    peftplug.convert(tmp_path / "paddle", tmp_path / "back", to="peft")
    assert_bit_identical(tmp_path / "torch", tmp_path / "back")
    assert read_adapter(tmp_path / "back").config.fan_in_fan_out, "GPT-2's Conv1D needs fan_in_fan_out in HF PEFT"
