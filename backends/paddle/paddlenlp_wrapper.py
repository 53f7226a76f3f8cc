"""What peftplug's PaddleNLP-API models on Paddle share (``peftplug.paddlenlp``'s ``LoRAModel``,
``PrefixModelForCausalLM``): attributes falling through to the model, PaddleNLP's
trainable-parameter line, its tensor-parallel rules, and
the checks of a save's directory and of the keyword arguments PaddleNLP's ``Trainer`` passes to
``save_pretrained``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddlenlp.utils.log import logger

from peftplug.errors import ConfigError
from peftplug.model.delegation import DelegatesToInner
from peftplug.model.paddlenlp_report import trainable_line as paddlenlp_line


def model_attribute(self: nn.Layer, name: str) -> Any:
    """``__getattr__`` of a wrapper holding the user's model as ``self.model``: what Paddle's
    ``Layer`` does not find is the model's (``config``, ``generate``, ...). PaddleNLP's classes,
    which these wrappers subclass, are skipped: on a half-built wrapper theirs recurses."""
    try:
        return nn.Layer.__getattr__(self, name)
    except AttributeError:
        if name == "model" or name in DelegatesToInner._own:
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


def adopt_model_degree(config: Any, degree: int | None, label: str) -> None:
    """PaddleNLP's rule: the PEFT config takes the model's ``tensor_parallel_degree``, with its warning."""
    if degree is not None and config.tensor_parallel_degree != degree:
        config.tensor_parallel_degree = degree
        logger.warning(f"Reset tensor_parallel_degree of {label} to {degree}.")


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
