"""Prompt tuning's encoder for PyTorch: a table of virtual-token embeddings.

``embedding`` is an ``nn.Embedding(T * num_transformer_submodules, token_dim)``, named as in HF
PEFT (``prompt_encoder.<adapter>.embedding.weight``), so counts and saved ``prompt_embeddings``
match it. Initialisation, HF PEFT's (skipped for an adapter built for inference, whose values are
loaded right after):

- RANDOM: ``nn.Embedding``'s own init, N(0, 1);
- SAMPLE_VOCAB: the word embeddings of ids drawn uniformly from the vocabulary;
- TEXT: the word embeddings of the tokens of ``prompt_tuning_init_text`` (special tokens
  included, as the tokenizer adds them), repeated or cut to ``T * submodules``.

The copied embeddings are kept in float32 whatever the model's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peftplug.backends.torch.prompt import TorchPromptEncoder, input_embeddings
from peftplug.errors import ConfigError
from peftplug.plugins.prompt_tuning.config import PromptTuningConfig


class PromptEmbedding(TorchPromptEncoder):
    """The learned virtual-token embeddings: the table is the prompt."""

    injects = "embeddings"

    def __init__(self, config: PromptTuningConfig, word_embeddings: nn.Module | None = None):
        super().__init__(config)
        rows = config.num_virtual_tokens * config.num_transformer_submodules
        self.embedding = nn.Embedding(rows, config.token_dim)
        if config.inference_mode or config.prompt_tuning_init == "RANDOM":
            return
        if word_embeddings is None:
            raise ConfigError(
                type(config).__name__,
                "prompt_tuning_init",
                config.prompt_tuning_init,
                "'RANDOM' for a model without word embeddings",
            )
        if config.prompt_tuning_init == "SAMPLE_VOCAB":
            vocab_size = word_embeddings.weight.shape[0]
            ids = torch.randint(0, vocab_size, (rows,), dtype=torch.long)
        else:
            ids = torch.tensor(text_token_ids(config, rows), dtype=torch.long)
        with torch.no_grad():
            values = word_embeddings(ids.to(word_embeddings.weight.device)).detach().clone().to(torch.float32)
        self.embedding.weight = nn.Parameter(values)

    @classmethod
    def for_model(cls, config: PromptTuningConfig, model: nn.Module) -> PromptEmbedding:
        """The encoder for ``model`` (whose word embeddings SAMPLE_VOCAB and TEXT read)."""
        needs_words = not config.inference_mode and config.prompt_tuning_init != "RANDOM"
        return cls(config, input_embeddings(model) if needs_words else None)

    def table(self) -> torch.Tensor:
        """The embedding table itself, ``[T * submodules, token_dim]``."""
        return self.embedding.weight


def text_token_ids(config: PromptTuningConfig, count: int) -> list[int]:
    """The init text's token ids, repeated or cut to ``count`` (HF PEFT's TEXT init)."""
    tokenizer = config.tokenizer
    if tokenizer is None:
        from transformers import AutoTokenizer

        kwargs = dict(config.tokenizer_kwargs or {})
        kwargs.pop("trust_remote_code", None)  # loading an adapter must never run code
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **kwargs)
        except (OSError, ValueError) as error:
            raise ConfigError(
                type(config).__name__,
                "tokenizer_name_or_path",
                config.tokenizer_name_or_path,
                f"a tokenizer that loads with AutoTokenizer.from_pretrained ({type(error).__name__}: {error})",
            ) from error
    ids = list(tokenizer(config.prompt_tuning_init_text)["input_ids"])
    if not ids:
        raise ConfigError(
            type(config).__name__,
            "prompt_tuning_init_text",
            config.prompt_tuning_init_text,
            "a text the tokenizer turns into tokens",
        )
    return (ids * math.ceil(count / len(ids)))[:count]


def build_encoder(config: PromptTuningConfig, model: nn.Module) -> PromptEmbedding:
    """The prompt embedding for ``config``, initialised from ``model``'s word embeddings when the init asks."""
    return PromptEmbedding.for_model(config, model)
