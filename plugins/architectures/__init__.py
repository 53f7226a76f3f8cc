"""Built-in model families: the ``model_type`` names each answers to and default targets.

The LoRA defaults are HF PEFT's (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``), so a
config without ``target_modules`` adapts the same modules in both libraries.
"""

from __future__ import annotations

from peftplug.markers import hookimpl
from peftplug.registration import Architecture

_QV = ("q_proj", "v_proj")

BUILTIN_ARCHITECTURES = (
    Architecture("llama", ("llama",), {"lora": _QV}),
    Architecture("qwen2", ("qwen2", "qwen3"), {"lora": _QV}),
    Architecture("mistral", ("mistral", "mixtral"), {"lora": _QV}),
    Architecture("gemma", ("gemma", "gemma2"), {"lora": _QV}),
    Architecture("opt", ("opt", "bart", "gptj"), {"lora": _QV}),
    Architecture("phi", ("phi",), {"lora": ("q_proj", "v_proj", "fc1", "fc2")}),
    Architecture("bloom", ("bloom", "gpt_neox", "falcon", "chatglm"), {"lora": ("query_key_value",)}),
    Architecture("gpt2", ("gpt2", "gpt_bigcode"), {"lora": ("c_attn",)}),
    Architecture("t5", ("t5", "mt5"), {"lora": ("q", "v")}),
    Architecture("bert", ("bert", "roberta", "xlm-roberta"), {"lora": ("query", "value")}),
    Architecture("deberta-v2", ("deberta-v2",), {"lora": ("query_proj", "value_proj")}),
)


@hookimpl
def peftplug_register_architectures() -> list[Architecture]:
    """The families above."""
    return list(BUILTIN_ARCHITECTURES)
