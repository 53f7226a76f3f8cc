"""PaddleNLP's prefix-model hooks for Paddle: the prefix ``[batch, T, 2L, heads, head_dim]`` (keys
of every layer, then their values) turned into a model's per-layer cache of ``(keys, values)``,
each ``[batch, T, heads, head_dim]``: the layout PaddleNLP's Llama and Bloom take."""

from __future__ import annotations

import paddle


def llama_postprocess_past_key_value(past_key_values: paddle.Tensor) -> tuple[tuple[paddle.Tensor, paddle.Tensor], ...]:
    """PaddleNLP Llama's cache from the prefix."""
    keys, values = paddle.transpose(past_key_values, perm=[2, 0, 1, 3, 4]).split(2)
    return tuple(zip(keys, values))


def bloom_postprocess_past_key_value(past_key_values: paddle.Tensor) -> tuple[tuple[paddle.Tensor, paddle.Tensor], ...]:
    """PaddleNLP Bloom's cache from the prefix (the same layout as Llama's)."""
    return llama_postprocess_past_key_value(past_key_values)
