"""P-tuning's encoder for Paddle: virtual-token embeddings through an MLP or an LSTM
(the network: :mod:`peftplug.plugins.p_tuning.network`).

The Paddle twin of :mod:`peftplug.plugins.p_tuning.torch_encoder`, with the same modules and
names (``embedding``, ``mlp_head``, ``lstm_head``), so parameter counts equal the PyTorch
encoder's (and HF PEFT's) and the saved encoder weights are interchangeable. An encoder built
for inference holds the output table alone in ``embedding``.
"""

from __future__ import annotations

from paddle import nn

from peftplug.backends.paddle.prompt_encoder import PaddlePromptEncoder, normal_embedding, torch_like_linear
from peftplug.plugins.p_tuning.config import PromptEncoderConfig
from peftplug.plugins.p_tuning.network import NetworkShape, PTuningTable, with_relu_between


class PaddlePromptEncoderNetwork(PTuningTable, PaddlePromptEncoder):
    """Virtual tokens reparameterised by an MLP or a bidirectional LSTM (HF PEFT's ``PromptEncoder``)."""

    injects = "embeddings"

    def __init__(self, config: PromptEncoderConfig):
        super().__init__(config)
        shape = NetworkShape.of(config)
        self.encoder_type = shape.encoder_type
        self.embedding = normal_embedding(shape.rows, shape.token_dim)
        if config.inference_mode:
            return
        self.reparameterised = True
        if shape.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=shape.token_dim,
                hidden_size=shape.hidden,
                num_layers=shape.lstm_layers,
                direction="bidirect",
                dropout=shape.lstm_dropout,
            )
        linears = [torch_like_linear(fan_in, fan_out) for fan_in, fan_out in shape.mlp_widths()]
        self.mlp_head = nn.Sequential(*with_relu_between(linears, nn.ReLU))


def build_encoder(config: PromptEncoderConfig, model: nn.Layer) -> PaddlePromptEncoderNetwork:
    """P-tuning's encoder for ``config`` (``model``, which every declared encoder factory receives, is not needed)."""
    return PaddlePromptEncoderNetwork(config)
