"""P-tuning's encoder for Paddle: virtual-token embeddings through an MLP or an LSTM.

The Paddle twin of :mod:`peftplug.plugins.p_tuning.torch_encoder`, with the same modules and
names (``embedding``, ``mlp_head``, ``lstm_head``), so parameter counts equal the PyTorch
encoder's (and HF PEFT's) and the saved encoder weights are interchangeable. For
``T * submodules`` rows of width ``d = token_dim`` and ``h = encoder_hidden_size``::

    MLP:   embedding [rows, d] -> Linear(d, h) ReLU Linear(h, h) ReLU Linear(h, d)
    LSTM:  embedding [rows, d] -> LSTM(d, h, encoder_num_layers, bidirectional, encoder_dropout)
                               -> Linear(2h, 2h) ReLU Linear(2h, d)

An encoder built for inference holds the output table alone in ``embedding``.
"""

from __future__ import annotations

import warnings

import paddle
from paddle import nn

from peftplug.backends.paddle.prompt_encoder import PaddlePromptEncoder, normal_embedding, torch_like_linear
from peftplug.plugins.p_tuning.config import PromptEncoderConfig

MLP_LAYERS = 2  # HF PEFT's default encoder_num_layers; an MLP always has this many hidden layers


class PaddlePromptEncoderNetwork(PaddlePromptEncoder):
    """Virtual tokens reparameterised by an MLP or a bidirectional LSTM (HF PEFT's ``PromptEncoder``)."""

    injects = "embeddings"

    def __init__(self, config: PromptEncoderConfig):
        super().__init__(config)
        token_dim = config.token_dim
        hidden = config.encoder_hidden_size or token_dim
        rows = config.num_virtual_tokens * config.num_transformer_submodules
        self.encoder_type = config.encoder_reparameterization_type
        self.embedding = normal_embedding(rows, token_dim)
        if config.inference_mode:
            return
        self.reparameterised = True
        if self.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=token_dim,
                hidden_size=hidden,
                num_layers=config.encoder_num_layers,
                direction="bidirect",
                dropout=config.encoder_dropout,
            )
            self.mlp_head = nn.Sequential(
                torch_like_linear(hidden * 2, hidden * 2), nn.ReLU(), torch_like_linear(hidden * 2, token_dim)
            )
        else:
            if config.encoder_num_layers != MLP_LAYERS:
                warnings.warn(
                    f"PromptEncoderConfig: for MLP, encoder_num_layers={config.encoder_num_layers} is ignored; "
                    f"exactly {MLP_LAYERS} hidden layers are used (as in HF PEFT)",
                    UserWarning,
                    stacklevel=2,
                )
            self.mlp_head = nn.Sequential(
                torch_like_linear(token_dim, hidden),
                nn.ReLU(),
                torch_like_linear(hidden, hidden),
                nn.ReLU(),
                torch_like_linear(hidden, token_dim),
            )

    def table(self) -> paddle.Tensor:
        """The encoder's output for every virtual token, ``[rows, token_dim]``."""
        embeddings = self.embedding.weight
        if not self.reparameterised:
            return embeddings
        if self.encoder_type == "LSTM":
            return self.mlp_head(self.lstm_head(embeddings.unsqueeze(0))[0]).squeeze(0)
        return self.mlp_head(embeddings)

    def _drop_network(self) -> None:
        """Delete the MLP (and LSTM) head."""
        for name in ("lstm_head", "mlp_head"):
            if name in self._sub_layers:
                delattr(self, name)
