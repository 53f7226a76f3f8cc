"""HF PEFT's ``prepare_model_for_kbit_training`` for transformers models."""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn

HALF = (torch.float16, torch.bfloat16)


def prepare_for_kbit_training(model: nn.Module, use_gradient_checkpointing: bool, checkpointing: dict) -> None:
    """Freeze every parameter and cast half-precision ones to float32; for a quantized model
    with ``use_gradient_checkpointing``, make the input embeddings' output require grad (which
    reentrant checkpointing needs) and turn checkpointing on with ``checkpointing`` as its
    ``gradient_checkpointing_kwargs``."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    for parameter in model.parameters():
        if parameter.dtype in HALF:
            parameter.data = parameter.data.to(torch.float32)
    quantized = getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False)
    if not (quantized and use_gradient_checkpointing):
        return
    if checkpointing.get("use_reentrant", True):
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
        else:
            model.get_input_embeddings().register_forward_hook(
                lambda module, inputs, output: output.requires_grad_(True)
            )
    takes_kwargs = "gradient_checkpointing_kwargs" in inspect.signature(model.gradient_checkpointing_enable).parameters
    if checkpointing and not takes_kwargs:
        warnings.warn(
            "this transformers version's gradient_checkpointing_enable takes no gradient_checkpointing_kwargs: "
            f"{checkpointing} are ignored",
            UserWarning,
            stacklevel=3,
        )
    model.gradient_checkpointing_enable(**({"gradient_checkpointing_kwargs": checkpointing} if takes_kwargs else {}))
