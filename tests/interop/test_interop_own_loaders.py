"""Files peftplug writes, read by the *other* library's own loader (never peftplug's):

- an adapter trained on Paddle and saved with the default ``format="peft"`` loads in HF PEFT's
  ``PeftModel.from_pretrained`` on the HF twin of the base, with the Paddle model's logits, for
  all five methods;
- an adapter trained on torch and saved with ``format="paddlenlp"`` loads in PaddleNLP's own
  ``LoRAModel.from_pretrained`` / ``PrefixModelForCausalLM.from_pretrained`` on the PaddleNLP
  twin, with the torch model's logits.

The twins carry the same base weights (:func:`peftplug.interop.weights.copy_base_weights`); every adapter
is trained first, so a loader that drops it fails the comparison (checked: the adapted logits
differ from the base's).
"""

from __future__ import annotations

import warnings

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
    train_paddle,
    train_torch,
    trained_on_paddle,
    trained_on_torch,
)

import peftplug

PADDLE_CASES = [("llama", m) for m in METHODS] + [("bloom", m) for m in BLOOM_METHODS]


@pytest.fixture(scope="module")
def peft():
    """The installed HF PEFT (skips without it)."""
    return pytest.importorskip("peft")


@pytest.mark.parametrize("family, method", PADDLE_CASES)
def test_a_paddle_trained_adapter_loads_in_hf_peft(torch, paddle, peft, family, method, tmp_path):
    _, model, expected = trained_on_paddle(torch, paddle, family, method)
    model.save_pretrained(tmp_path)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # HF PEFT warns about missing keys, then runs the bare base
        theirs = peft.PeftModel.from_pretrained(hf_model(torch, family), str(tmp_path)).eval()
    assert_close(torch_logits(torch, theirs), expected, f"HF PEFT on a Paddle-trained {method} adapter")


def paddlenlp_prefix_loader(family):
    from paddlenlp.peft.prefix.utils import bloom_postprocess_past_key_value, llama_postprocess_past_key_value

    return llama_postprocess_past_key_value if family == "llama" else bloom_postprocess_past_key_value


TORCH_CASES = [
    ("llama", "lora"),
    ("llama", "prefix"),
    ("llama", "prefix_projection"),
    ("bloom", "lora"),
    ("bloom", "prefix"),
]


@pytest.mark.parametrize("family, method", TORCH_CASES)
def test_a_torch_trained_adapter_loads_in_paddlenlp(torch, paddle, family, method, tmp_path):
    from paddlenlp.peft import LoRAModel, PrefixModelForCausalLM

    model, expected = trained_on_torch(torch, family, method)
    pd_base = paddle_model(paddle, family, hf_model(torch, family))
    model.save_pretrained(tmp_path, format="paddlenlp")

    if method == "lora":
        theirs = LoRAModel.from_pretrained(pd_base, str(tmp_path))
    else:
        theirs = PrefixModelForCausalLM.from_pretrained(pd_base, str(tmp_path), paddlenlp_prefix_loader(family))
    theirs.eval()
    if method == "lora":
        got = paddle_logits(paddle, theirs)
    else:
        ids = paddle.to_tensor(IDS)
        with paddle.no_grad():
            out = theirs(input_ids=ids, attention_mask=paddle.ones(ids.shape, dtype="int64"), return_dict=True)
        got = out.logits.numpy()
    assert_close(got, expected, f"PaddleNLP on a torch-trained {method} adapter")


def test_a_lora_for_fused_projections_loads_in_paddlenlp(torch, paddle, tmp_path):
    """Separate q/k/v and gate/up, trained on torch, converted for a PaddleNLP Llama with
    fuse_attention_qkv and fuse_attention_ffn: PaddleNLP's LoRAModel gives the torch logits."""
    from paddlenlp.peft import LoRAModel

    hf = hf_model(torch, "llama")
    fused = paddle_model(paddle, "llama", hf, fuse_attention_qkv=True, fuse_attention_ffn=True)
    config = peftplug.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]
    )
    model = peftplug.get_peft_model(hf, config)
    train_torch(torch, model)
    expected = torch_logits(torch, model)
    model.save_pretrained(tmp_path / "torch")
    peftplug.convert(tmp_path / "torch", tmp_path / "fused", to="paddlenlp", base_config=fused.config)
    theirs = LoRAModel.from_pretrained(fused, str(tmp_path / "fused"))
    theirs.eval()
    assert_close(paddle_logits(paddle, theirs), expected, "PaddleNLP on fused qkv / gate-up")


def test_a_lora_trained_on_fused_projections_loads_in_hf_peft(torch, paddle, peft, tmp_path):
    """A LoRA trained on PaddleNLP's fused qkv_proj, saved with the default format, is split into
    HF's q/k/v on the way out: HF PEFT gives the Paddle logits."""
    hf = hf_model(torch, "llama")
    fused = paddle_model(paddle, "llama", hf, fuse_attention_qkv=True)
    base_logits = paddle_logits(paddle, fused)
    model = peftplug.get_peft_model(
        fused, peftplug.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"])
    )
    train_paddle(paddle, model)
    expected = paddle_logits(paddle, model)
    assert_changed(expected, base_logits)
    model.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(hf_model(torch, "llama"), str(tmp_path)).eval()
    assert_close(torch_logits(torch, theirs), expected, "HF PEFT on a LoRA of a fused qkv_proj")


def test_a_gpt2_c_attn_lora_loads_in_paddlenlp_and_back_in_hf_peft(torch, paddle, peft, tmp_path):
    """GPT-2's c_attn LoRA (torch) in PaddleNLP GPT's q/k/v (PaddleNLP's LoRAModel), and a LoRA
    trained on PaddleNLP GPT's q/k/v saved for HF PEFT's GPT-2 c_attn."""
    from paddlenlp.peft import LoRAModel

    hf, pd = gpt2_twins(torch, paddle)
    model = peftplug.get_peft_model(
        hf, peftplug.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    train_torch(torch, model)
    expected = torch_logits(torch, model)
    model.save_pretrained(tmp_path / "torch", format="paddlenlp")
    theirs = LoRAModel.from_pretrained(pd, str(tmp_path / "torch"))
    theirs.eval()
    assert_close(paddle_logits(paddle, theirs), expected, "PaddleNLP GPT on GPT-2's c_attn LoRA")

    hf, pd = gpt2_twins(torch, paddle)
    base_logits = paddle_logits(paddle, pd)
    ours = peftplug.get_peft_model(
        pd, peftplug.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"])
    )
    train_paddle(paddle, ours)
    assert_changed(paddle_logits(paddle, ours), base_logits)
    ours.save_pretrained(tmp_path / "paddle")
    theirs = peft.PeftModel.from_pretrained(hf, str(tmp_path / "paddle")).eval()
    assert_close(torch_logits(torch, theirs), paddle_logits(paddle, ours), "HF PEFT's GPT-2 on a Paddle GPT q/k/v LoRA")
