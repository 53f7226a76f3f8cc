"""Built-in model families (the ``model_type`` names each answers to and default targets) and the
naming conventions their maps use: "hf" (HF transformers', canonical) and "paddle" (PaddleNLP's).

The defaults are HF PEFT's, so a config without ``target_modules`` adapts the same modules in
both libraries: ``"lora"`` from ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``, ``"ia3"``
and ``"ia3_feedforward"`` (IA3's ``feedforward_modules``) from
``TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING`` and ``..._IA3_FEEDFORWARD_MODULES_MAPPING``.
A family groups the model types whose defaults are equal for every method; a model type HF PEFT
has no IA3 defaults for (``chatglm``, ``xlm-roberta``) gets none here either.

Llama, Qwen2, Bloom and GPT-2 also carry their module maps across the two conventions,
PaddleNLP's model types and default targets and the prefix-tuning cache layout
(:mod:`.families`); :mod:`peftplug.interop.name_maps` holds the functions that use them.
"""

from __future__ import annotations

from peftplug.markers import hookimpl
from peftplug.plugins.architectures.conventions import BUILTIN_CONVENTIONS
from peftplug.plugins.architectures.families import (
    BLOOM_MODULES,
    GPT2_MODULES,
    LLAMA_MODULES,
    PADDLE_LORA_TARGETS,
    PREFIX_CACHE,
    QWEN2_MODULES,
)
from peftplug.registration import Architecture, Convention

_QV = ("q_proj", "v_proj")


def _ia3(targets: tuple[str, ...], feedforward: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """IA3's two default lists: the targets, and which of them scale their input."""
    return {"ia3": targets, "ia3_feedforward": feedforward}


def _paddle(family: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """PaddleNLP's default LoRA targets for ``family`` (regexes), as the "paddle" convention's."""
    return {"paddle": {"lora": PADDLE_LORA_TARGETS[family]}}


_GPT2_DEFAULTS = {"lora": ("c_attn",), **_ia3(("c_attn", "mlp.c_proj"), ("mlp.c_proj",))}
_KV_DOWN = _ia3(("k_proj", "v_proj", "down_proj"), ("down_proj",))
_QV_DOWN = _ia3(("q_proj", "v_proj", "down_proj"), ("down_proj",))

BUILTIN_ARCHITECTURES = (
    Architecture(
        "llama",
        ("llama",),
        {"lora": _QV, **_KV_DOWN},
        convention_model_types={"paddle": ("llama",)},
        modules=LLAMA_MODULES,
        convention_default_targets=_paddle("llama"),
        prefix_cache=PREFIX_CACHE["llama"],
    ),
    Architecture(
        "qwen2",
        ("qwen2",),
        {"lora": _QV, **_QV_DOWN},
        convention_model_types={"paddle": ("qwen2",)},
        modules=QWEN2_MODULES,
        convention_default_targets=_paddle("qwen2"),
        prefix_cache=PREFIX_CACHE["qwen2"],
    ),
    Architecture("qwen3", ("qwen3",), {"lora": _QV, **_QV_DOWN}),
    Architecture("mistral", ("mistral",), {"lora": _QV, **_KV_DOWN}),
    Architecture("mixtral", ("mixtral",), {"lora": _QV, **_ia3(("k_proj", "v_proj", "w2"), ("w2",))}),
    Architecture("gemma", ("gemma", "gemma2"), {"lora": _QV, **_QV_DOWN}),
    Architecture("opt", ("opt",), {"lora": _QV, **_ia3(("q_proj", "k_proj", "fc2"), ("fc2",))}),
    Architecture("bart", ("bart",), {"lora": _QV, **_ia3(("q_proj", "v_proj", "fc2"), ("fc2",))}),
    Architecture("gptj", ("gptj",), {"lora": _QV, **_ia3(("q_proj", "v_proj", "fc_out"), ("fc_out",))}),
    Architecture(
        "phi", ("phi",), {"lora": ("q_proj", "v_proj", "fc1", "fc2"), **_ia3(("q_proj", "v_proj", "fc2"), ("fc2",))}
    ),
    Architecture(
        "bloom",
        ("bloom",),
        {"lora": ("query_key_value",), **_ia3(("query_key_value", "mlp.dense_4h_to_h"), ("mlp.dense_4h_to_h",))},
        convention_model_types={"paddle": ("bloom",)},
        modules=BLOOM_MODULES,
        convention_default_targets=_paddle("bloom"),
        prefix_cache=PREFIX_CACHE["bloom"],
    ),
    Architecture(
        "gpt_neox",
        ("gpt_neox", "falcon"),
        {"lora": ("query_key_value",), **_ia3(("query_key_value", "dense_4h_to_h"), ("dense_4h_to_h",))},
    ),
    Architecture("chatglm", ("chatglm",), {"lora": ("query_key_value",)}),
    Architecture(
        "gpt2",
        ("gpt2",),
        _GPT2_DEFAULTS,
        convention_model_types={"paddle": ("gpt",)},
        modules=GPT2_MODULES,
        convention_default_targets=_paddle("gpt2"),
        prefix_cache=PREFIX_CACHE["gpt2"],
    ),
    Architecture("gpt_bigcode", ("gpt_bigcode",), _GPT2_DEFAULTS),
    Architecture("t5", ("t5",), {"lora": ("q", "v"), **_ia3(("k", "v", "wo"), ("wo",))}),
    Architecture("mt5", ("mt5",), {"lora": ("q", "v"), **_ia3(("k", "v", "wi_1"), ())}),
    Architecture(
        "bert",
        ("bert", "roberta"),
        {"lora": ("query", "value"), **_ia3(("key", "value", "output.dense"), ("output.dense",))},
    ),
    Architecture("xlm-roberta", ("xlm-roberta",), {"lora": ("query", "value")}),
    Architecture(
        "deberta-v2",
        ("deberta-v2",),
        {"lora": ("query_proj", "value_proj"), **_ia3(("key_proj", "value_proj", "output.dense"), ("output.dense",))},
    ),
)


@hookimpl
def peftplug_register_architectures() -> list[Architecture]:
    """The families above."""
    return list(BUILTIN_ARCHITECTURES)


@hookimpl
def peftplug_register_conventions() -> list[Convention]:
    """HF transformers' convention (canonical) and PaddleNLP's."""
    return list(BUILTIN_CONVENTIONS)
