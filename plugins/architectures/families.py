"""Module maps across the "hf" and "paddle" conventions of the built-in families: Llama, Qwen2,
Bloom, GPT-2.

Read off transformers 4.57 and paddlenlp 2.8.1 (``paddlenlp/transformers/<family>/modeling.py``)
and checked by ``tests/interop/test_architectures.py``, which copies weights between tiny models of both
libraries and compares logits. Qwen2 is not in paddlenlp 2.8.1: its map follows PaddleNLP 3's
``qwen2/modeling.py`` (``Qwen2PretrainedModel._get_name_mappings``: ``model.`` <-> ``qwen2.``,
Linear weights and an untied ``lm_head`` transposed, q/k/v biases as they are).

What differs per family:

- Llama, Qwen2: every Linear transposes (Paddle ``[in, out]``); PaddleNLP's ``lm_head`` is
  ``[hidden, vocab]``, so it transposes too. PaddleNLP's Llama may fuse (config
  ``fuse_attention_qkv``) q, k, v into ``qkv_proj``, laid out per key/value group
  (``[kv_heads, (groups + 2) * head_dim]``: the group's query heads, then its key and value
  head), and (``fuse_attention_ffn``) gate and up into ``gate_up_fused_proj`` (``[gate | up]``).
- Bloom: the fused ``query_key_value`` has the same per-head layout (``[heads, 3, head_dim]``)
  in both, so it only transposes. PaddleNLP's ``lm_head.decoder_weight`` is ``[vocab, hidden]``
  and always the word embeddings (PaddleNLP 2.8.1 ties it whatever the config says).
- GPT-2: transformers' ``Conv1D`` weights are ``[in, out]`` already; PaddleNLP's GPT splits the
  fused ``c_attn`` (``[q | k | v]`` on the output axis) into ``q_proj``, ``k_proj``,
  ``v_proj``. Its ``lm_head.weight`` is the word embeddings ``[vocab, hidden]`` (always tied).

Prefix-tuning caches (:class:`PrefixCacheLayout`): HF PEFT interleaves k0, v0, k1, v1; PaddleNLP
(``llama_``, ``bloom_``, ``qwen_postprocess_past_key_value``) splits into sections. PaddleNLP's
Llama and Qwen2 start the input's position ids at 0 after the prefix, HF at T; Bloom has no
position ids (ALiBi from the attention mask, prefix included, on both sides); PaddleNLP's GPT
offsets by the cache length like HF but PaddleNLP has no prefix tuning for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from peftplug.registration import ModuleMap, PrefixCache, PrefixCacheLayout


def _map(
    hf: str | tuple[str, ...],
    paddle: str | tuple[str, ...],
    kind: Literal["linear", "conv1d", "same"] = "same",
    paddle_params: Mapping[str, str] | None = None,
    layout: Literal["concat", "kv_groups"] = "concat",
) -> ModuleMap:
    """One module, HF's path(s) and PaddleNLP's; ``paddle_params`` are PaddleNLP's renames."""
    return ModuleMap({"hf": hf, "paddle": paddle}, kind, {"paddle": paddle_params} if paddle_params else {}, layout)


def _prefix(
    paddle_order: Literal["interleaved", "sections"] | None,
    paddle_positions: Literal["offset", "restart", "alibi"],
    paddle_postprocess: str | None = None,
    hf_positions: Literal["offset", "restart", "alibi"] = "offset",
) -> PrefixCacheLayout:
    """A family's prefix cache: HF PEFT interleaves; PaddleNLP's order, positions, postprocess."""
    return PrefixCacheLayout(
        {
            "hf": PrefixCache("interleaved", hf_positions),
            "paddle": PrefixCache(paddle_order, paddle_positions, paddle_postprocess),
        }
    )


def _llama_like(paddle_prefix: str, fused: bool) -> tuple[ModuleMap, ...]:
    """Llama's layout (also Qwen2's): ``model.`` <-> ``<paddle_prefix>.``, Linear transposed;
    with ``fused``, also PaddleNLP's ``fuse_attention_qkv`` / ``fuse_attention_ffn`` modules."""
    layer_hf, layer_pd = "model.layers.{n}", f"{paddle_prefix}.layers.{{n}}"
    linears = [f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    fused_modules = (
        _map(
            tuple(f"{layer_hf}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")),
            f"{layer_pd}.self_attn.qkv_proj",
            "linear",
            layout="kv_groups",
        ),
        _map(
            tuple(f"{layer_hf}.mlp.{p}" for p in ("gate_proj", "up_proj")),
            f"{layer_pd}.mlp.gate_up_fused_proj",
            "linear",
        ),
    )
    return (
        _map("model.embed_tokens", f"{paddle_prefix}.embed_tokens"),
        *(_map(f"{layer_hf}.{m}", f"{layer_pd}.{m}", "linear") for m in linears),
        _map(f"{layer_hf}.input_layernorm", f"{layer_pd}.input_layernorm"),
        _map(f"{layer_hf}.post_attention_layernorm", f"{layer_pd}.post_attention_layernorm"),
        _map("model.norm", f"{paddle_prefix}.norm"),
        _map("lm_head", "lm_head", "linear"),
        *(fused_modules if fused else ()),
    )


LLAMA_MODULES = _llama_like("llama", fused=True)
QWEN2_MODULES = _llama_like("qwen2", fused=False)

BLOOM_MODULES = (
    _map("transformer.word_embeddings", "bloom.word_embeddings"),
    _map("transformer.word_embeddings_layernorm", "bloom.word_embeddings_layernorm"),
    _map("transformer.h.{n}.input_layernorm", "bloom.h.{n}.input_layernorm"),
    _map("transformer.h.{n}.self_attention.query_key_value", "bloom.h.{n}.self_attention.query_key_value", "linear"),
    _map("transformer.h.{n}.self_attention.dense", "bloom.h.{n}.self_attention.dense", "linear"),
    _map("transformer.h.{n}.post_attention_layernorm", "bloom.h.{n}.post_attention_layernorm"),
    _map("transformer.h.{n}.mlp.dense_h_to_4h", "bloom.h.{n}.mlp.dense_h_to_4h", "linear"),
    _map("transformer.h.{n}.mlp.dense_4h_to_h", "bloom.h.{n}.mlp.dense_4h_to_h", "linear"),
    _map("transformer.ln_f", "bloom.ln_f"),
    _map("lm_head", "lm_head", "same", {"weight": "decoder_weight"}),
)

_GPT_LAYER = "gpt.decoder.layers.{n}"
GPT2_MODULES = (
    _map("transformer.wte", "gpt.embeddings.word_embeddings"),
    _map("transformer.wpe", "gpt.embeddings.position_embeddings"),
    _map("transformer.h.{n}.ln_1", f"{_GPT_LAYER}.norm1"),
    _map(
        "transformer.h.{n}.attn.c_attn",
        tuple(f"{_GPT_LAYER}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")),
        "conv1d",
    ),
    _map("transformer.h.{n}.attn.c_proj", f"{_GPT_LAYER}.self_attn.out_proj", "conv1d"),
    _map("transformer.h.{n}.ln_2", f"{_GPT_LAYER}.norm2"),
    _map("transformer.h.{n}.mlp.c_fc", f"{_GPT_LAYER}.linear1", "conv1d"),
    _map("transformer.h.{n}.mlp.c_proj", f"{_GPT_LAYER}.linear2", "conv1d"),
    _map("transformer.ln_f", "gpt.decoder.norm"),
    _map("lm_head", "lm_head"),
)

# PaddleNLP's LoRA defaults: llm/utils/utils.py get_lora_target_modules (regexes, fullmatch).
PADDLE_LORA_TARGETS = {
    "llama": (
        ".*q_proj.*",
        ".*v_proj.*",
        ".*k_proj.*",
        ".*o_proj.*",
        ".*qkv_proj.*",
        ".*gate_proj.*",
        ".*down_proj.*",
        ".*up_proj.*",
        ".*gate_up_fused_proj.*",
    ),
    "qwen2": (".*q_proj.*", ".*k_proj.*", ".*v_proj.*", ".*o_proj.*", ".*gate_proj.*", ".*down_proj.*", ".*up_proj.*"),
    "bloom": (".*query_key_value.*", ".*dense.*", ".*dense_h_to_4h.*", ".*dense_4h_to_h.*"),
    "gpt2": (".*qkv_proj.*", ".*q_proj.*", ".*k_proj.*", ".*v_proj.*", ".*linear1.*", ".*linear2.*", ".*out_proj.*"),
}

PREFIX_CACHE = {
    "llama": _prefix("sections", "restart", "llama_postprocess_past_key_value"),
    "qwen2": _prefix("sections", "restart", "qwen_postprocess_past_key_value"),
    "bloom": _prefix("sections", "alibi", "bloom_postprocess_past_key_value", hf_positions="alibi"),
    "gpt2": _prefix(None, "offset"),
}
