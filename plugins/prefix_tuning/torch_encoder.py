"""Prefix tuning's encoder for PyTorch: learned keys and values, handed to the model as a Cache.

Modules and names are HF PEFT's (``embedding``, ``transform``), so parameter counts and names
match it. With ``L = num_layers``, ``d = token_dim`` (the key/value width: ``head_dim *
num_key_value_heads`` for grouped-query attention) and ``h = encoder_hidden_size``::

    no projection:    embedding [T, 2 L d]
    with projection:  embedding [T, d] -> Linear(d, h) Tanh Linear(h, 2 L d)

The output table ``[T, 2 L d]`` is what HF PEFT saves as ``prompt_embeddings``. For a batch it
is viewed ``[B, T, 2L, heads, head_dim]``, permuted to ``[2L, B, heads, T, head_dim]`` and split
in chunks of 2, so keys and values interleave per layer (k0, v0, k1, v1, ...), and reaches the
model as a ``DynamicCache`` (an ``EncoderDecoderCache`` whose self-attention part holds the
prefix for seq2seq, where HF PEFT's layout is repeated: ``num_transformer_submodules`` 2).
"""

from __future__ import annotations

import torch
from torch import nn

from peftplug.backends.torch.prompt import TorchPromptEncoder
from peftplug.errors import ConfigError
from peftplug.plugins.prefix_tuning.config import PrefixTuningConfig


class PrefixEncoder(TorchPromptEncoder):
    """The prefix (HF PEFT's ``PrefixEncoder``) and the cache built from it."""

    injects = "past_key_values"

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
        self.num_layers = layers
        self.num_heads = config.num_attention_heads
        self.head_dim = token_dim // config.num_attention_heads
        self.submodules = config.num_transformer_submodules
        width = layers * 2 * token_dim
        if config.prefix_projection and not config.inference_mode:
            self.reparameterised = True
            hidden = config.encoder_hidden_size or token_dim
            self.embedding = nn.Embedding(tokens, token_dim)
            self.transform = nn.Sequential(nn.Linear(token_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
            if config.init_weights == "zero":
                nn.init.zeros_(self.transform[-1].weight)
                nn.init.zeros_(self.transform[-1].bias)
        else:
            self.embedding = nn.Embedding(tokens, width)
            if config.init_weights == "zero":
                nn.init.zeros_(self.embedding.weight)

    def table(self) -> torch.Tensor:
        """The keys and values of every layer for each virtual token, ``[T, 2 L token_dim]``."""
        if self.reparameterised:
            return self.transform(self.embedding.weight)
        return self.embedding.weight

    def _drop_network(self) -> None:
        """Delete the projection."""
        if "transform" in self._modules:
            del self.transform

    def past_key_values(self, batch_size: int, dtype: torch.dtype | None = None):
        """The prefix as a transformers cache for a batch (in ``dtype``, the model's, when given)."""
        table = self.table()
        if dtype is not None:
            table = table.to(dtype)
        tokens = table.shape[0]
        values = table.unsqueeze(0).expand(batch_size, -1, -1)
        values = values.view(batch_size, tokens, self.num_layers * 2, self.num_heads, self.head_dim)
        if self.submodules == 2:
            values = torch.cat([values, values], dim=2)
        per_layer = values.permute(2, 0, 3, 1, 4).split(self.submodules * 2)
        return _as_cache(per_layer, self.submodules)


def _as_cache(per_layer: tuple[torch.Tensor, ...], submodules: int):
    """HF PEFT's cache for the per-layer ``[2 or 4, B, heads, T, head_dim]`` stacks."""
    import transformers
    from packaging import version
    from transformers import DynamicCache, EncoderDecoderCache

    from_legacy = version.parse(transformers.__version__) < version.parse("4.56.0.dev0")
    if submodules == 1:
        return DynamicCache.from_legacy_cache(per_layer) if from_legacy else DynamicCache(per_layer)
    cache = EncoderDecoderCache.from_legacy_cache(per_layer) if from_legacy else EncoderDecoderCache(per_layer)
    # The encoder's output is new for every input: cross-attention keys and values are computed
    # by the model, never taken from the prefix.
    cache.cross_attention_cache = DynamicCache()
    for layer in cache.is_updated:
        cache.is_updated[layer] = False
    return cache


def build_encoder(config: PrefixTuningConfig, model: nn.Module) -> PrefixEncoder:
    """The prefix encoder for ``config`` (``model``, which every declared encoder factory receives, is not needed)."""
    return PrefixEncoder(config)
