"""The PyTorch implementation of the core's BackendOps."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.layer import TorchAdapterLayer, copy_into, to_numpy
from peftplug.backends.torch.model import TorchPeftModel
from peftplug.backends.torch.modules_to_save import ModulesToSaveLayer
from peftplug.backends.torch.prompt import (
    check_task_type,
    input_embeddings,
    refuse_gradient_checkpointing,
    uses_gradient_checkpointing,
)
from peftplug.backends.torch.tensor_parallel import is_dtensor
from peftplug.backends.torch.trainer_support import install as install_trainer_support


def is_conv1d(module: Any) -> bool:
    """True for transformers' GPT-2 style ``Conv1D`` (weight stored ``[in, out]``)."""
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    return pytorch_utils is not None and isinstance(module, pytorch_utils.Conv1D)


class TorchBackend:
    """Walks, replaces, freezes and converts torch modules for the framework-free core."""

    name = "torch"

    def create_peft_model(self, model: nn.Module, method: Any) -> TorchPeftModel:
        """Wrap ``model`` in a :class:`TorchPeftModel`, and let ``transformers.Trainer`` save and
        load it as HF PEFT's models (:mod:`peftplug.backends.torch.trainer_support`)."""
        install_trainer_support()
        return TorchPeftModel(model, self, method)

    def is_adapter_layer(self, module: Any) -> bool:
        """True for peftplug's torch adapter layers."""
        return isinstance(module, TorchAdapterLayer)

    def named_modules(self, root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
        """(name, module) in model order, not descending into adapter layers."""
        yield prefix, root
        if isinstance(root, TorchAdapterLayer):
            return
        for child_name, child in root._modules.items():
            if child is not None:
                yield from self.named_modules(child, f"{prefix}.{child_name}" if prefix else child_name)

    def get_module(self, root: nn.Module, name: str) -> nn.Module:
        """The submodule at dotted ``name``."""
        return root.get_submodule(name)

    def replace_module(self, root: nn.Module, name: str, new: nn.Module) -> None:
        """Put ``new`` where ``name`` is; the new module keeps the old one's train/eval mode."""
        parent_name, _, child_name = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        training = getattr(parent, child_name).training
        # A freshly built wrapper is in training mode around the old module, which keeps its
        # own mode: walking the wrapper's whole subtree with train() matters only for eval.
        if new.training != training:
            new.train(training)
        setattr(parent, child_name, new)

    def named_parameters(self, root: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Every parameter once (shared ones under their first name)."""
        return root.named_parameters()

    def numel(self, parameter: nn.Parameter) -> int:
        """Number of values, as HF PEFT counts them: a packed quantized weight (one carrying its
        quantization state, as bitsandbytes' 4-bit ones do) counts the values it stands for."""
        shape = getattr(getattr(parameter, "quant_state", None), "shape", None)
        return math.prod(shape) if shape is not None else parameter.numel()

    def is_trainable(self, parameter: nn.Parameter) -> bool:
        """``requires_grad``."""
        return parameter.requires_grad

    def set_trainable(self, parameter: nn.Parameter, trainable: bool) -> None:
        """Set ``requires_grad``."""
        parameter.requires_grad_(trainable)

    def to_numpy(self, tensor: torch.Tensor) -> np.ndarray:
        """A numpy copy (bfloat16 as float32)."""
        return to_numpy(tensor)

    def from_numpy(self, array: np.ndarray) -> torch.Tensor:
        """``torch.from_numpy`` of a copy (the tensor owns its memory)."""
        return torch.from_numpy(np.array(array))

    def keep_adapter_in_base_dtype(self, layer: TorchAdapterLayer, adapter_name: str) -> None:
        """Cast adapter ``adapter_name``'s floating-point parameters in ``layer`` to its base
        weight's dtype (HF PEFT's ``autocast_adapter_dtype=False``; by default a float16 /
        bfloat16 base's adapters are float32)."""
        weight = getattr(getattr(layer, "base_layer", None), "weight", None)
        if weight is None or not weight.is_floating_point():
            return
        for name, parameter in layer.named_parameters():
            if not name.startswith("base_layer.") and adapter_name in name.split(".") and parameter.is_floating_point():
                parameter.data = parameter.data.to(weight.dtype)

    def copy_into(self, parameter: nn.Parameter, array: np.ndarray, key: str) -> None:
        """Copy with a shape check naming ``key``."""
        copy_into(parameter, array, key)

    def state_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``state_dict(keep_vars=True)``, each tensor once: names whose tensors are views of one
        storage with one shape and stride (tied weights) give the same object."""
        shared: dict[Any, torch.Tensor] = {}
        tensors = {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            key = id(tensor) if is_dtensor(tensor) else (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
            tensors[name] = shared.setdefault(key, tensor)
        return tensors

    def model_type(self, model: nn.Module) -> str | None:
        """``model.config.model_type`` for transformers models, else None."""
        return getattr(getattr(model, "config", None), "model_type", None)

    def is_linear(self, module: Any) -> bool:
        """``nn.Linear`` or transformers' ``Conv1D``."""
        return isinstance(module, nn.Linear) or is_conv1d(module)

    def output_layer_names(self, model: nn.Module) -> list[str]:
        """The name of the output embedding (``lm_head``), which ``all-linear`` leaves out."""
        get_output = getattr(model, "get_output_embeddings", None)
        output = get_output() if callable(get_output) else None
        if output is None:
            return []
        return [name for name, module in model.named_modules() if module is output]

    def wrap_module_to_save(self, module: nn.Module, adapter_name: str) -> ModulesToSaveLayer:
        """A :class:`ModulesToSaveLayer` around ``module``."""
        return ModulesToSaveLayer(module, adapter_name)

    def model_config(self, model: nn.Module) -> Any:
        """``model.config`` (a transformers ``PretrainedConfig``), or None for plain modules."""
        return getattr(model, "config", None)

    def attach_prompt_encoder(
        self, peft_model: TorchPeftModel, adapter_name: str, encoder: nn.Module, config: Any
    ) -> None:
        """Put ``encoder`` in ``peft_model.prompt_encoder[adapter_name]`` (an ``nn.ModuleDict``, on
        the word embeddings' device) and the base model's word embeddings in
        ``peft_model.word_embeddings``, as HF PEFT does; freeze the base model.

        ``word_embeddings`` is a plain reference, not a registered submodule (HF PEFT registers
        it): parameter counts are the same either way, since a shared parameter counts once, but
        a registered copy would put the embedding in ``state_dict()`` twice, which safetensors
        refuses (``Trainer`` checkpoints fail with "Some tensors share memory").

        Task types other than CAUSAL_LM, SEQ_2_SEQ_LM and SEQ_CLS are refused (naming the field),
        and so is prefix tuning on a model with gradient checkpointing switched on.
        """
        check_task_type(config)
        model = peft_model.base_model.model
        if encoder.injects == "past_key_values" and uses_gradient_checkpointing(model):
            refuse_gradient_checkpointing(model)
        model.requires_grad_(False)
        word_embeddings = input_embeddings(model)
        weight = getattr(word_embeddings, "weight", None)
        if weight is not None:
            encoder.to(device=weight.device)
        if "prompt_encoder" not in peft_model._modules:
            peft_model.prompt_encoder = nn.ModuleDict()
        peft_model.prompt_encoder[adapter_name] = encoder
        object.__setattr__(peft_model, "word_embeddings", word_embeddings)
        peft_model._prompt_learning = True

    def prompt_encoders(self, peft_model: TorchPeftModel) -> dict[str, nn.Module]:
        """``peft_model.prompt_encoder`` as a dict (empty for layer methods)."""
        holder = peft_model._modules.get("prompt_encoder")
        return dict(holder.items()) if holder is not None else {}

    def remove_prompt_encoder(self, peft_model: TorchPeftModel, adapter_name: str) -> None:
        """Delete ``peft_model.prompt_encoder[adapter_name]``."""
        del peft_model.prompt_encoder[adapter_name]

    def prepare_for_kbit_training(
        self, model: nn.Module, use_gradient_checkpointing: bool, checkpointing: dict
    ) -> None:
        """HF PEFT's preparation (:mod:`peftplug.backends.torch.kbit`)."""
        from peftplug.backends.torch.kbit import prepare_for_kbit_training

        prepare_for_kbit_training(model, use_gradient_checkpointing, checkpointing)

    def tensor_parallel(self, model: nn.Module) -> Any:
        """The :class:`~peftplug.backends.torch.tensor_parallel.TorchTensorParallelGroup` of a
        model sharded with DTensor tensor parallelism, or None."""
        from peftplug.backends.torch.tensor_parallel import tensor_parallel_group

        return tensor_parallel_group(model)
