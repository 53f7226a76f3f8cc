"""PromptEncoderBase: what the prompt-learning encoders share on every framework.

An encoder's output table (``prompt_embeddings``, ``[rows, width]``) is what HF PEFT saves. A
reparameterised encoder (P-tuning's MLP/LSTM, prefix tuning's projection) also has a network
whose weights peftplug saves beside it, so that training resumes exactly. The rules for loading
the two are the same on PyTorch and Paddle and live here; each backend's encoder base
(``TorchPromptEncoder``, ``PaddlePromptEncoder``) mixes this class in before its framework's
module class and supplies the tensor-level methods listed under "for the backend".
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from peftplug.errors import AdapterLoadError, AdapterShapeError, some_names

# How far an encoder's recomputed output may differ from the saved prompt_embeddings before the
# encoder weights are taken to be stale (a file written by another save than the prompt's).
CONSISTENCY_ATOL = 1e-5
CONSISTENCY_RTOL = 1e-4


class PromptEncoderBase:
    """The core's PromptEncoder protocol, less what touches tensors.

    A method's encoder sets ``injects`` (``"embeddings"``: virtual tokens before the input;
    ``"past_key_values"``: a prefix in the attention cache), builds ``self.embedding`` and, when
    ``reparameterised``, its network (only for training, as HF PEFT does: an encoder built for
    inference holds the output table alone), and implements ``table`` and ``_drop_network``.
    """

    injects: ClassVar[str] = "embeddings"

    def __init__(self, config: Any):
        super().__init__()
        self.num_virtual_tokens = config.num_virtual_tokens
        self.reparameterised = False

    # ------------------------------------------------------------ for subclasses
    def table(self) -> Any:
        """The encoder's output rows, ``[rows, width]`` (differentiable)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement table()")

    def _drop_network(self) -> None:
        """Delete the reparameterisation network (the table is then trained directly)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _drop_network()")

    # ------------------------------------------------------------ for the backend
    def export_encoder(self) -> dict[str, np.ndarray]:
        """The whole encoder's state (embedding and network) under the PyTorch encoder's names
        and layouts when it is reparameterised, else nothing."""
        raise NotImplementedError(f"{type(self).__name__} does not implement export_encoder()")

    def _table_array(self) -> np.ndarray:
        """The output table computed without gradients or dropout, as float32 numpy."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _table_array()")

    def _copy_table(self, saved: np.ndarray) -> None:
        """Copy ``saved`` into the (plain) embedding table, checking its shape."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _copy_table()")

    def _copy_encoder(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays shaped as :meth:`export_encoder` gives them into the encoder."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _copy_encoder()")

    def _use_table(self, saved: np.ndarray) -> None:
        """Drop the network and become a plain table holding ``saved``, trainable as before."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _use_table()")

    # ------------------------------------------------------------ PromptEncoder protocol
    def import_prompt(self, tensors: dict[str, np.ndarray], encoder_tensors: dict[str, np.ndarray]) -> set[str]:
        """Load ``prompt_embeddings`` and, for a reparameterised encoder, its own weights.

        A reparameterised encoder (training P-tuning or prefix with projection) loads
        ``encoder_tensors`` when they are there and reproduce the saved ``prompt_embeddings``;
        otherwise (an adapter saved by HF PEFT, which drops them, or a stale encoder file) it
        warns and trains the saved table directly, without the network: the model then starts
        exactly where the saved adapter was. (HF PEFT copies the table into the embedding in
        front of a fresh network instead, which changes the outputs.)
        """
        if "prompt_embeddings" not in tensors:
            present = ", ".join(sorted(tensors)[:5]) or "none"
            raise AdapterLoadError(
                f"the adapter has no 'prompt_embeddings' tensor, which a {type(self).__name__} needs "
                f"(tensors present: {present})"
            )
        saved = tensors["prompt_embeddings"]
        if not self.reparameterised:
            self._copy_table(saved)
            return {"prompt_embeddings"}
        expected = self._table_array().shape
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

    def _load_encoder(self, encoder_tensors: dict[str, np.ndarray], saved: np.ndarray) -> str | None:
        """Load the encoder weights; a reason they cannot be used (the encoder is then as it
        was), or None when they reproduce ``saved``."""
        current = self.export_encoder()
        if set(current) != set(encoder_tensors):
            keys = some_names(sorted(encoder_tensors))
            return f"the encoder weights saved with the adapter do not fit this encoder (keys {keys})"
        for key, value in encoder_tensors.items():
            if tuple(current[key].shape) != tuple(value.shape):
                return f"encoder weight {key!r} has shape {list(value.shape)}, this encoder {list(current[key].shape)}"
        self._copy_encoder(encoder_tensors)
        table = self._table_array()
        if not np.allclose(table, np.asarray(saved, dtype=np.float32), atol=CONSISTENCY_ATOL, rtol=CONSISTENCY_RTOL):
            self._copy_encoder(current)
            return (
                "the encoder weights saved with the adapter do not reproduce its prompt_embeddings "
                "(a stale encoder file?)"
            )
        return None
