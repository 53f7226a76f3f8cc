"""What peftplug's PaddleNLP-API models on Paddle share (``peftplug.paddlenlp``'s ``LoRAModel``,
``PrefixModelForCausalLM``): attributes falling through to the wrapped model, PaddleNLP's
trainable-parameter line, and the checks of a save's directory and of the keyword arguments
PaddleNLP's ``Trainer`` passes to ``save_pretrained``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle import nn

from peftplug.errors import ConfigError
from peftplug.model.paddlenlp_report import trainable_line as paddlenlp_line

OWN = frozenset({"model", "_sub_layers", "_parameters", "_buffers"})


class WrapsPaddleNLPModel:
    """Mixed before ``paddle.nn.Layer`` by a class holding the user's model as ``self.model``."""

    def __getattr__(self, name: str) -> Any:
        """Attributes the wrapper lacks are the model's (``config``, ``generate``, ...)."""
        try:
            return nn.Layer.__getattr__(self, name)
        except AttributeError:
            if name in OWN:
                raise
            return getattr(self.model, name)


def trainable_line(tensors: Iterable[paddle.Tensor]) -> str:
    """PaddleNLP's ``print_trainable_parameters`` line for these state tensors."""
    counts = {True: 0, False: 0}
    for tensor in tensors:
        counts[bool(tensor.stop_gradient)] += int(np.prod(tensor.shape))
    return paddlenlp_line(frozen=counts[True], trainable=counts[False])


def writes_here(owner: str, save_directory: str | Path, kwargs: dict[str, Any]) -> bool:
    """Whether this process writes a save to ``save_directory`` (PaddleNLP's ``is_main_process``,
    rank 0 by default); a file in its place, or a tensor-parallel ``variant``, is an error
    naming it."""
    directory = Path(save_directory)
    if directory.is_file():
        raise ConfigError(f"{owner}.save_pretrained", "save_directory", str(directory), "a directory, not a file")
    if kwargs.get("variant"):
        raise ConfigError(
            f"{owner}.save_pretrained",
            "variant",
            kwargs["variant"],
            "empty: peftplug.paddlenlp saves single-card models (no tp/pp shard files)",
        )
    return bool(kwargs.get("is_main_process", paddle.distributed.get_rank() == 0))


def refuse_tensor_parallel(owner: str, model: Any) -> int | None:
    """The model's ``config.tensor_parallel_degree`` (None when it has none); above 1 an error."""
    degree = getattr(getattr(model, "config", None), "tensor_parallel_degree", None)
    if degree is not None and degree > 1:
        raise ConfigError(
            owner,
            "model.config.tensor_parallel_degree",
            degree,
            "1 or less: peftplug.paddlenlp's classes are single-card; use peftplug.get_peft_model on sharded models",
        )
    return degree
