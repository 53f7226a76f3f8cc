"""P-tuning's encoder network, framework-free: its shape from the config, and its output table.

For ``T * submodules`` rows of width ``d = token_dim`` and ``h = encoder_hidden_size``::

    MLP:   embedding [rows, d] -> Linear(d, h) ReLU Linear(h, h) ReLU Linear(h, d)
    LSTM:  embedding [rows, d] -> LSTM(d, h, encoder_num_layers, bidirectional, encoder_dropout)
                               -> Linear(2h, 2h) ReLU Linear(2h, d)

Each backend builds those modules under HF PEFT's names (``embedding``, ``lstm_head``,
``mlp_head``) with :class:`NetworkShape`, and mixes in :class:`PTuningTable` for the table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peftplug.plugins.p_tuning.config import PromptEncoderConfig

MLP_LAYERS = 2  # HF PEFT's default encoder_num_layers; an MLP always has this many hidden layers
HEADS = ("lstm_head", "mlp_head")


@dataclass(frozen=True)
class NetworkShape:
    """The sizes of a P-tuning encoder, as HF PEFT's ``PromptEncoder`` derives them."""

    encoder_type: str  # "MLP" or "LSTM"
    rows: int
    token_dim: int
    hidden: int
    lstm_layers: int
    lstm_dropout: float

    @classmethod
    def of(cls, config: PromptEncoderConfig) -> NetworkShape:
        """The shape ``config`` asks for; warns, as HF PEFT ignores it, when an MLP is given
        ``encoder_num_layers`` other than 2."""
        encoder_type = config.encoder_reparameterization_type
        if encoder_type == "MLP" and config.encoder_num_layers != MLP_LAYERS and not config.inference_mode:
            warnings.warn(
                f"PromptEncoderConfig: for MLP, encoder_num_layers={config.encoder_num_layers} is ignored; "
                f"exactly {MLP_LAYERS} hidden layers are used (as in HF PEFT)",
                UserWarning,
                stacklevel=3,
            )
        return cls(
            encoder_type=encoder_type,
            rows=config.num_virtual_tokens * config.num_transformer_submodules,
            token_dim=config.token_dim,
            hidden=config.encoder_hidden_size or config.token_dim,
            lstm_layers=config.encoder_num_layers,
            lstm_dropout=config.encoder_dropout,
        )

    def mlp_widths(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of ``mlp_head``, in order; a ReLU goes between two."""
        if self.encoder_type == "LSTM":
            return [(2 * self.hidden, 2 * self.hidden), (2 * self.hidden, self.token_dim)]
        return [(self.token_dim, self.hidden), (self.hidden, self.hidden), (self.hidden, self.token_dim)]


def with_relu_between(layers: list[Any], relu: Callable[[], Any]) -> list[Any]:
    """``layers`` with a fresh ``relu()`` between each two (the order of ``mlp_head``)."""
    return [module for layer in layers for module in (relu(), layer)][1:]


class PTuningTable:
    """``table()`` and ``_drop_network()`` of a P-tuning encoder, for modules of either framework
    (both spell ``unsqueeze``, ``squeeze`` and submodule deletion alike)."""

    encoder_type: str
    reparameterised: bool
    embedding: Any

    def table(self) -> Any:
        """The encoder's output for every virtual token, ``[rows, token_dim]``."""
        embeddings = self.embedding.weight
        if not self.reparameterised:
            return embeddings
        if self.encoder_type == "LSTM":
            return self.mlp_head(self.lstm_head(embeddings.unsqueeze(0))[0]).squeeze(0)
        return self.mlp_head(embeddings)

    def _drop_network(self) -> None:
        """Delete the MLP (and LSTM) head."""
        for name in HEADS:
            if hasattr(self, name):
                delattr(self, name)
