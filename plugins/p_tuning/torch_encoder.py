"""P-tuning's encoder for PyTorch: virtual-token embeddings through an MLP or an LSTM
(the network: :mod:`peftplug.plugins.p_tuning.network`).

Modules and names are HF PEFT's (``embedding``, ``mlp_head``, ``lstm_head``), so parameter
counts and names match it. The output table is what HF PEFT saves as ``prompt_embeddings``. An
encoder built for inference holds that table alone in ``embedding`` (as HF PEFT's does); a
trained one also saves its embedding and network (``export_encoder``), so training resumes
exactly.
"""

from __future__ import annotations

from torch import nn

from peftplug.backends.torch.prompt import TorchPromptEncoder
from peftplug.plugins.p_tuning.config import PromptEncoderConfig
from peftplug.plugins.p_tuning.network import NetworkShape, PTuningTable, with_relu_between


class PromptEncoder(PTuningTable, TorchPromptEncoder):
    """Virtual tokens reparameterised by an MLP or a bidirectional LSTM (HF PEFT's ``PromptEncoder``)."""

    injects = "embeddings"

    def __init__(self, config: PromptEncoderConfig):
        super().__init__(config)
        shape = NetworkShape.of(config)
        self.encoder_type = shape.encoder_type
        self.embedding = nn.Embedding(shape.rows, shape.token_dim)
        if config.inference_mode:
            return
        self.reparameterised = True
        if shape.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=shape.token_dim,
                hidden_size=shape.hidden,
                num_layers=shape.lstm_layers,
                dropout=shape.lstm_dropout,
                bidirectional=True,
                batch_first=True,
            )
        linears = [nn.Linear(fan_in, fan_out) for fan_in, fan_out in shape.mlp_widths()]
        self.mlp_head = nn.Sequential(*with_relu_between(linears, nn.ReLU))


def build_encoder(config: PromptEncoderConfig, model: nn.Module) -> PromptEncoder:
    """P-tuning's encoder for ``config`` (``model``, which every declared encoder factory receives, is not needed)."""
    return PromptEncoder(config)
