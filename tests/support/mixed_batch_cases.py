"""The adapters the mixed-batch tests put in one batch, the same on torch and Paddle."""

from __future__ import annotations

import peftplug

ROWS = ["a", "b", "__base__", "c", "a", "b"]


def lora(**kwargs) -> peftplug.LoraConfig:
    """LoRA with random A and B on q, v and down projections."""
    return peftplug.LoraConfig(init_lora_weights=False, target_modules=["q_proj", "v_proj", "down_proj"], **kwargs)


CASES = {
    "lora, three ranks": {"a": lora(r=4), "b": lora(r=8, lora_alpha=32), "c": lora(r=2, use_rslora=True)},
    "dora beside lora": {"a": lora(r=4, use_dora=True), "b": lora(r=8), "c": lora(r=2, use_dora=True)},
    "ia3, both sides": {
        name: peftplug.IA3Config(
            init_ia3_weights=False, target_modules=["k_proj", "down_proj"], feedforward_modules=feedforward
        )
        for name, feedforward in (("a", ["down_proj"]), ("b", []), ("c", ["down_proj"]))
    },
}


def with_adapters(model, configs: dict):
    """``model`` with one adapter per entry of ``configs``, in eval mode."""
    names = list(configs)
    peft_model = peftplug.get_peft_model(model, configs[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, configs[name])
    peft_model.eval()
    return peft_model
