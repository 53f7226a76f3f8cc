"""Prompt tuning's encoder for Paddle: a table of virtual-token embeddings.

The Paddle twin of :mod:`peftplug.plugins.prompt_tuning.torch_encoder`: ``embedding`` is an
``nn.Embedding(T * num_transformer_submodules, token_dim)`` (parameter
``prompt_encoder.<adapter>.embedding.weight``, as in HF PEFT), initialised as HF PEFT does
(skipped for an adapter built for inference, whose values are loaded right after):

- RANDOM: N(0, 1), torch's ``nn.Embedding`` init;
- SAMPLE_VOCAB: the word embeddings of ids drawn uniformly from the vocabulary;
- TEXT: the word embeddings of the tokens of ``prompt_tuning_init_text`` (as the tokenizer
  gives them, special tokens included), repeated or cut to ``T * submodules``. The tokenizer is
  ``config.tokenizer`` (a PaddleNLP tokenizer, a transformers one, or anything with ``encode``
  such as :class:`peftplug.app.tokenizer.ByteTokenizer`) or loaded from ``tokenizer_name_or_path``
  with PaddleNLP's ``AutoTokenizer``.

The copied embeddings are kept in float32 whatever the model's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import paddle
from paddle import nn

from peftplug.backends.paddle.prompt_encoder import PaddlePromptEncoder, normal_embedding
from peftplug.errors import ConfigError
from peftplug.plugins.prompt_tuning.config import PromptTuningConfig


class PaddlePromptEmbedding(PaddlePromptEncoder):
    """The learned virtual-token embeddings: the table is the prompt."""

    injects = "embeddings"

    def __init__(self, config: PromptTuningConfig, word_embeddings: nn.Layer | None = None):
        super().__init__(config)
        rows = config.num_virtual_tokens * config.num_transformer_submodules
        self.embedding = normal_embedding(rows, config.token_dim)
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
            ids = paddle.randint(0, word_embeddings.weight.shape[0], [rows], dtype="int64")
        else:
            ids = paddle.to_tensor(text_token_ids(config, rows), dtype="int64")
        with paddle.no_grad():
            values = word_embeddings(ids).detach().astype(paddle.float32)
        self.embedding.weight.set_value(values)

    @classmethod
    def for_model(cls, config: PromptTuningConfig, model: nn.Layer) -> PaddlePromptEmbedding:
        """The encoder for ``model`` (whose word embeddings SAMPLE_VOCAB and TEXT read)."""
        from peftplug.backends.paddle.prompt import input_embeddings

        needs_words = not config.inference_mode and config.prompt_tuning_init != "RANDOM"
        return cls(config, input_embeddings(model) if needs_words else None)

    def table(self) -> paddle.Tensor:
        """The embedding table itself, ``[T * submodules, token_dim]``."""
        return self.embedding.weight

    def _drop_network(self) -> None:
        """Nothing to drop: prompt tuning has no network."""


def text_token_ids(config: PromptTuningConfig, count: int) -> list[int]:
    """The init text's token ids, repeated or cut to ``count`` (HF PEFT's TEXT init)."""
    tokenizer = config.tokenizer if config.tokenizer is not None else _load_tokenizer(config)
    text = config.prompt_tuning_init_text
    if callable(tokenizer):
        ids = tokenizer(text)["input_ids"]
    elif callable(getattr(tokenizer, "encode", None)):
        ids = tokenizer.encode(text)
    else:
        raise ConfigError(
            type(config).__name__,
            "tokenizer",
            type(tokenizer).__name__,
            "a tokenizer object that is callable (PaddleNLP, transformers) or has encode(text)",
        )
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    if not ids:
        raise ConfigError(
            type(config).__name__, "prompt_tuning_init_text", text, "a text the tokenizer turns into tokens"
        )
    return (ids * math.ceil(count / len(ids)))[:count]


def _load_tokenizer(config: PromptTuningConfig) -> Any:
    """PaddleNLP's ``AutoTokenizer`` for ``tokenizer_name_or_path`` (a local directory here)."""
    from paddlenlp.transformers import AutoTokenizer

    kwargs = dict(config.tokenizer_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # loading an adapter must never run code
    try:
        return AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **kwargs)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(
            type(config).__name__,
            "tokenizer_name_or_path",
            config.tokenizer_name_or_path,
            f"a tokenizer that loads with paddlenlp's AutoTokenizer.from_pretrained ({type(error).__name__}: {error})",
        ) from error


def build_encoder(config: PromptTuningConfig, model: nn.Layer) -> PaddlePromptEmbedding:
    """The prompt embedding for ``config``, initialised from ``model``'s word embeddings when the init asks."""
    return PaddlePromptEmbedding.for_model(config, model)
