"""Prefix tuning's encoder for Paddle: learned keys and values, handed to a PaddleNLP model as
its per-layer cache.

The Paddle twin of :mod:`peftplug.plugins.prefix_tuning.torch_encoder`, with the same modules
and names (``embedding``, ``transform``). With ``L = num_layers``, ``d = token_dim`` (the
key/value width, ``head_dim * num_key_value_heads`` for grouped-query attention) and
``h = encoder_hidden_size``::

    no projection:    embedding [T, 2 L d]
    with projection:  embedding [T, d] -> Linear(d, h) Tanh Linear(h, 2 L d)

The output table ``[T, 2 L d]`` is HF PEFT's ``prompt_embeddings``: viewed ``[T, 2L, heads,
head_dim]``, keys and values INTERLEAVE per layer (k0, v0, k1, v1, ...). PaddleNLP's own
``PrefixModelForCausalLM`` orders the same axis in two sections (k0..k(L-1), v0..v(L-1)):
the PaddleNLP format plugin (:mod:`peftplug.plugins.formats.paddlenlp_prefix`) reorders it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paddle
from paddle import nn

from peftplug.backends.paddle.prompt_encoder import PaddlePromptEncoder, normal_embedding, torch_like_linear
from peftplug.errors import ConfigError
from peftplug.plugins.prefix_tuning.config import PrefixTuningConfig


class PaddlePrefixEncoder(PaddlePromptEncoder):
    """The prefix (HF PEFT's ``PrefixEncoder``) and the per-layer keys and values built from it."""

    injects = "past_key_values"
    # PaddleNLP's prefix-model hook (``llama_postprocess_past_key_value``, ...): given the prefix
    # as ``[batch, T, 2L, heads, head_dim]`` in PaddleNLP's order (keys of every layer, then
    # values), it returns the model's cache; None: the cache of PaddleNLP's Llama and Bloom.
    postprocess_past_key_value: Callable[[paddle.Tensor], Any] | None = None

    def __init__(self, config: PrefixTuningConfig):
        super().__init__(config)
        tokens, token_dim, layers = config.num_virtual_tokens, config.token_dim, config.num_layers
        if token_dim % config.num_attention_heads:
            raise ConfigError(
                type(config).__name__,
                "token_dim",
                token_dim,
                f"a multiple of num_attention_heads={config.num_attention_heads} (keys and values are split per head)",
            )
        if config.num_transformer_submodules != 1:
            raise ConfigError(
                type(config).__name__,
                "num_transformer_submodules",
                config.num_transformer_submodules,
                "1: prefix tuning on Paddle runs decoder-only causal LMs",
            )
        self.num_layers = layers
        self.num_heads = config.num_attention_heads
        self.head_dim = token_dim // config.num_attention_heads
        width = layers * 2 * token_dim
        zero = config.init_weights == "zero"
        if config.prefix_projection and not config.inference_mode:
            self.reparameterised = True
            hidden = config.encoder_hidden_size or token_dim
            self.embedding = normal_embedding(tokens, token_dim)
            self.transform = nn.Sequential(
                torch_like_linear(token_dim, hidden), nn.Tanh(), torch_like_linear(hidden, width)
            )
            if zero:
                for parameter in self.transform[2].parameters():
                    parameter.set_value(paddle.zeros_like(parameter))
        else:
            self.embedding = normal_embedding(tokens, width)
            if zero:
                self.embedding.weight.set_value(paddle.zeros_like(self.embedding.weight))

    def table(self) -> paddle.Tensor:
        """The keys and values of every layer for each virtual token, ``[T, 2 L token_dim]``."""
        if self.reparameterised:
            return self.transform(self.embedding.weight)
        return self.embedding.weight

    def _drop_network(self) -> None:
        """Delete the projection."""
        if "transform" in self._sub_layers:
            del self.transform

    def past_key_values(self, batch_size: int, dtype: Any = None) -> list[tuple[paddle.Tensor, paddle.Tensor]]:
        """Per layer, the prefix's ``(keys, values)``, each ``[batch, T, heads, head_dim]``: the
        cache layout of PaddleNLP's Llama and Bloom (sequence on axis 1)."""
        table = self.table()
        if dtype is not None and table.dtype != dtype:
            table = table.astype(dtype)
        tokens = table.shape[0]
        values = table.reshape([1, tokens, self.num_layers * 2, self.num_heads, self.head_dim])
        values = values.expand([batch_size, tokens, self.num_layers * 2, self.num_heads, self.head_dim])
        if self.postprocess_past_key_value is not None:
            return self.postprocess_past_key_value(self._in_sections(values))
        return [(values[:, :, 2 * layer], values[:, :, 2 * layer + 1]) for layer in range(self.num_layers)]

    def _in_sections(self, values: paddle.Tensor) -> paddle.Tensor:
        """``[batch, T, 2L, heads, head_dim]`` with keys interleaved (k0, v0, k1, ...) reordered
        to PaddleNLP's sections (k0..k(L-1), v0..v(L-1))."""
        batch, tokens = values.shape[0], values.shape[1]
        blocks = values.reshape([batch, tokens, self.num_layers, 2, self.num_heads, self.head_dim])
        blocks = blocks.transpose([0, 1, 3, 2, 4, 5])
        return blocks.reshape([batch, tokens, 2 * self.num_layers, self.num_heads, self.head_dim])


def build_encoder(config: PrefixTuningConfig, model: nn.Layer) -> PaddlePrefixEncoder:
    """The prefix encoder for ``config`` (``model``, which every declared encoder factory receives, is not needed)."""
    return PaddlePrefixEncoder(config)
