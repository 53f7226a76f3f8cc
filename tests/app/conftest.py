"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest
from torch_lm import model_inputs, train_steps


@pytest.fixture
def hf_base_and_adapter(tmp_path, make_model, torch):
    """A tiny transformers Llama saved to ``base`` and a trained peftplug LoRA for it in
    ``adapter``: (base dir, adapter dir, the adapter model's logits on ``ids``, ids)."""
    import peftplug

    make_model("llama").save_pretrained(tmp_path / "base")
    model = peftplug.get_peft_model(
        make_model("llama"),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    inputs = model_inputs(torch, "llama")
    train_steps(torch, model, inputs, steps=5, lr=5e-2)
    model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = model(**inputs).logits
    return tmp_path / "base", tmp_path / "adapter", expected, inputs
