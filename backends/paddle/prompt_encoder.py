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
import warnings
from typing import Any, ClassVar, Iterator

import numpy as np
import paddle
from paddle import nn

from peftplug.backends.paddle.layer import copy_into, to_numpy
from peftplug.errors import AdapterLoadError, AdapterShapeError

# How far an encoder's recomputed output may differ from the saved prompt_embeddings before the
# encoder weights are taken to be stale (the PyTorch encoders' tolerance).
_CONSISTENCY_ATOL = 1e-5
_CONSISTENCY_RTOL = 1e-4


class PaddlePromptEncoder(nn.Layer):
    """The shared part of the Paddle prompt encoders.

    A subclass sets ``injects`` (``"embeddings"`` or ``"past_key_values"``), builds
    ``self.embedding`` and, when ``reparameterised``, its network (only for training, as HF PEFT
    does: an encoder built for inference holds the output table alone), and implements
    :meth:`table` and :meth:`_drop_network`.
    """

    injects: ClassVar[str] = "embeddings"

    def __init__(self, config: Any):
        super().__init__()
        self.num_virtual_tokens = config.num_virtual_tokens
        self.reparameterised = False

    # ------------------------------------------------------------ for subclasses
    def table(self) -> paddle.Tensor:
        """The encoder's output rows, ``[rows, width]`` (differentiable)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement table()")

    def _drop_network(self) -> None:
        """Delete the reparameterisation network (the table is then trained directly)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _drop_network()")

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

    def import_prompt(self, tensors: dict[str, np.ndarray], encoder_tensors: dict[str, np.ndarray]) -> set[str]:
        """Load ``prompt_embeddings`` and, for a reparameterised encoder, its own weights.

        As on PyTorch: a reparameterised encoder takes ``encoder_tensors`` when they are there
        and reproduce the saved ``prompt_embeddings``; otherwise (an adapter saved by HF PEFT,
        or a stale encoder file) it warns and trains the saved table directly, without the
        network, so the model starts exactly where the saved adapter was.
        """
        if "prompt_embeddings" not in tensors:
            present = ", ".join(sorted(tensors)[:5]) or "none"
            raise AdapterLoadError(
                f"the adapter has no 'prompt_embeddings' tensor, which a {type(self).__name__} needs "
                f"(tensors present: {present})"
            )
        saved = tensors["prompt_embeddings"]
        if not self.reparameterised:
            copy_into(self.embedding.weight, saved, "prompt_embeddings")
            return {"prompt_embeddings"}
        with paddle.no_grad(), eval_mode(self):
            expected = tuple(self.table().shape)
        if tuple(saved.shape) != expected:
            raise AdapterShapeError("prompt_embeddings", tuple(saved.shape), expected)
        problem = (
            self._load_encoder(encoder_tensors, saved)
            if encoder_tensors
            else "the adapter holds no encoder weights (HF PEFT does not save them)"
        )
        if problem:
            warnings.warn(
                f"{type(self).__name__}: {problem}; training continues from the saved prompt_embeddings, "
                "trained directly without the reparameterisation network",
                UserWarning,
                stacklevel=4,
            )
            self._use_table(saved)
        return {"prompt_embeddings"}

    # ------------------------------------------------------------ helpers
    def _linear_weight_names(self) -> set[str]:
        """Names of the ``nn.Linear`` weights (stored ``[in, out]`` here, ``[out, in]`` in torch)."""
        return {
            f"{name}.weight" for name, layer in self.named_sublayers() if isinstance(layer, nn.Linear)
        }

    def _load_encoder(self, encoder_tensors: dict[str, np.ndarray], saved: np.ndarray) -> str | None:
        """Load the encoder weights; a reason they cannot be used, or None when they reproduce ``saved``."""
        own = dict(self.named_parameters())
        if set(own) != set(encoder_tensors):
            keys = _some(sorted(encoder_tensors))
            return f"the encoder weights saved with the adapter do not fit this encoder (keys {keys})"
        transposed = self._linear_weight_names()
        arrays = {
            key: np.ascontiguousarray(value.T) if key in transposed else value for key, value in encoder_tensors.items()
        }
        for key, value in arrays.items():
            if tuple(own[key].shape) != tuple(value.shape):
                shape = list(value.shape[::-1]) if key in transposed else list(value.shape)
                mine = list(own[key].shape[::-1]) if key in transposed else list(own[key].shape)
                return f"encoder weight {key!r} has shape {shape}, this encoder {mine}"
        backup = {key: to_numpy(parameter) for key, parameter in own.items()}
        for key, value in arrays.items():
            copy_into(own[key], value, f"prompt_encoder.{key}")
        with paddle.no_grad(), eval_mode(self):
            table = to_numpy(self.table()).astype(np.float32)
        if not np.allclose(table, np.asarray(saved, dtype=np.float32), atol=_CONSISTENCY_ATOL, rtol=_CONSISTENCY_RTOL):
            for key, value in backup.items():
                copy_into(own[key], value, f"prompt_encoder.{key}")
            return (
                "the encoder weights saved with the adapter do not reproduce its prompt_embeddings "
                "(a stale encoder file?)"
            )
        return None

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


def _some(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
