"""PaddlePromptEncoder: what the three prompt-learning encoders share on Paddle (the core's
PromptEncoder protocol).

The encoders mirror the PyTorch ones module for module and name for name (``embedding``,
``mlp_head``, ``lstm_head``, ``transform``), so the saved ``prompt_embeddings`` is HF PEFT's and
the encoder weights in ``AdapterState.extra_tensors`` are interchangeable with the PyTorch
encoders': names are the torch ``state_dict`` names and every ``nn.Linear`` weight leaves and
enters in torch's ``[out, in]`` layout (Paddle stores ``[in, out]``). Paddle's ``nn.LSTM``
already uses torch's names, shapes and gate order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import paddle
from paddle import nn

from peftplug.backends.paddle.layer import copy_into, to_numpy
from peftplug.model.prompt_encoder import PromptEncoderBase


class PaddlePromptEncoder(PromptEncoderBase, nn.Layer):
    """What the three prompt-learning encoders share on Paddle.

    A subclass sets ``injects``, builds ``self.embedding`` and, when ``reparameterised``, its
    network, and implements ``table`` and ``_drop_network`` (see
    :class:`peftplug.model.prompt_encoder.PromptEncoderBase`, which holds the loading rules).

    ``pad_attention_mask``: None, or PaddleNLP's prefix-model hook
    ``pad_attention_mask(input_shape, num_virtual_tokens, attention_mask)`` that makes the mask
    cover the virtual tokens (in forward and in each generation step) instead of the backend's
    leading ones.
    """

    pad_attention_mask: Callable[..., paddle.Tensor] | None = None

    # ------------------------------------------------------------ for the model
    def virtual_embeddings(self, batch_size: int) -> paddle.Tensor:
        """The virtual-token embeddings for a batch, ``[batch, rows, width]`` (one computation, expanded)."""
        table = self.table()
        return table.unsqueeze(0).expand([batch_size, table.shape[0], table.shape[1]])

    # ------------------------------------------------------------ PromptEncoder protocol
    def set_trainable(self, trainable: bool) -> None:
        """Every parameter of the encoder trainable, or all frozen."""
        for parameter in self.parameters():
            parameter.stop_gradient = not trainable

    def export_prompt(self) -> dict[str, np.ndarray]:
        """``{"prompt_embeddings": table}``, computed without dropout (what HF PEFT loads)."""
        with paddle.no_grad(), eval_mode(self):
            return {"prompt_embeddings": to_numpy(self.table())}

    def export_encoder(self) -> dict[str, np.ndarray]:
        """The whole encoder (embedding and network) under the PyTorch encoder's names and
        layouts when it is reparameterised, else nothing (``prompt_embeddings`` is then all)."""
        if not self.reparameterised:
            return {}
        transposed = self._linear_weight_names()
        return {
            name: to_numpy(parameter).T.copy() if name in transposed else to_numpy(parameter)
            for name, parameter in self.named_parameters()
        }

    # ------------------------------------------------------------ for PromptEncoderBase
    def _table_array(self) -> np.ndarray:
        """The output table without gradients or dropout, float32."""
        with paddle.no_grad(), eval_mode(self):
            return to_numpy(self.table()).astype(np.float32, copy=False)

    def _copy_table(self, saved: np.ndarray) -> None:
        """Copy ``saved`` into ``embedding.weight``."""
        copy_into(self.embedding.weight, saved, "prompt_embeddings")

    def _copy_encoder(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays in the PyTorch encoder's layouts into the parameters of the same names."""
        own = dict(self.named_parameters())
        transposed = self._linear_weight_names()
        for key, value in arrays.items():
            value = np.ascontiguousarray(value.T) if key in transposed else value
            copy_into(own[key], value, f"prompt_encoder.{key}")

    def _linear_weight_names(self) -> set[str]:
        """Names of the ``nn.Linear`` weights (stored ``[in, out]`` here, ``[out, in]`` in torch)."""
        return {f"{name}.weight" for name, layer in self.named_sublayers() if isinstance(layer, nn.Linear)}

    def _use_table(self, saved: np.ndarray) -> None:
        """Turn into a plain table holding ``saved`` (trainable as the old embedding was)."""
        trainable = not self.embedding.weight.stop_gradient
        self._drop_network()
        self.embedding = nn.Embedding(*saved.shape)
        copy_into(self.embedding.weight, saved, "prompt_embeddings")
        self.embedding.weight.stop_gradient = not trainable
        self.reparameterised = False


@contextlib.contextmanager
def eval_mode(layer: nn.Layer) -> Iterator[None]:
    """Run ``layer`` in eval mode (no dropout) for the duration, restoring its mode after."""
    was_training = layer.training
    layer.eval()
    try:
        yield
    finally:
        if was_training:
            layer.train()


def normal_embedding(rows: int, width: int) -> nn.Embedding:
    """An ``nn.Embedding`` initialised N(0, 1), as torch's (Paddle's default is Xavier)."""
    return nn.Embedding(rows, width, weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 1.0)))


def torch_like_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """An ``nn.Linear`` initialised as torch's: weight and bias U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(fan_in)
    init = nn.initializer.Uniform(-bound, bound)
    attr = paddle.ParamAttr(initializer=init)
    return nn.Linear(fan_in, fan_out, weight_attr=attr, bias_attr=paddle.ParamAttr(initializer=init))
