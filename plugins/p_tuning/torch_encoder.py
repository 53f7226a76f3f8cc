"""P-tuning's encoder for PyTorch: virtual-token embeddings through an MLP or an LSTM.

Modules and names are HF PEFT's (``embedding``, ``mlp_head``, ``lstm_head``), so parameter
counts and names match it. For ``T * submodules`` rows of width ``d = token_dim`` and
``h = encoder_hidden_size``::

    MLP:   embedding [rows, d] -> Linear(d, h) ReLU Linear(h, h) ReLU Linear(h, d)
    LSTM:  embedding [rows, d] -> LSTM(d, h, encoder_num_layers, bidirectional, encoder_dropout)
                               -> Linear(2h, 2h) ReLU Linear(2h, d)

The output table is what HF PEFT saves as ``prompt_embeddings``. An encoder built for inference
holds that table alone in ``embedding`` (as HF PEFT's does); a trained one also saves its
embedding and network (``export_encoder``), so training resumes exactly.
"""

from __future__ import annotations

import warnings

import torch
from peftplug.backends.torch.prompt import TorchPromptEncoder
from peftplug.plugins.p_tuning.config import PromptEncoderConfig
from torch import nn

MLP_LAYERS = 2  # HF PEFT's default encoder_num_layers; an MLP always has this many hidden layers


class PromptEncoder(TorchPromptEncoder):
    """Virtual tokens reparameterised by an MLP or a bidirectional LSTM (HF PEFT's ``PromptEncoder``)."""

    injects = "embeddings"

    def __init__(self, config: PromptEncoderConfig):
        super().__init__(config)
        token_dim = config.token_dim
        hidden = config.encoder_hidden_size or token_dim
        rows = config.num_virtual_tokens * config.num_transformer_submodules
        self.encoder_type = config.encoder_reparameterization_type
        self.embedding = nn.Embedding(rows, token_dim)
        if config.inference_mode:
            return
        self.reparameterised = True
        if self.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=token_dim,
                hidden_size=hidden,
                num_layers=config.encoder_num_layers,
                dropout=config.encoder_dropout,
                bidirectional=True,
                batch_first=True,
            )
            self.mlp_head = nn.Sequential(
                nn.Linear(hidden * 2, hidden * 2), nn.ReLU(), nn.Linear(hidden * 2, token_dim)
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
                nn.Linear(token_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, token_dim),
            )

    def table(self) -> torch.Tensor:
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
            if name in self._modules:
                delattr(self, name)
