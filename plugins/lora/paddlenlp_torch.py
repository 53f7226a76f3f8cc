"""PaddleNLP's ``LoRAModel`` on a torch model: the same script, switched to PyTorch by its model
line, gets peftplug's torch LoRA with PaddleNLP's API (names, freezing rules, merging:
:mod:`peftplug.plugins.lora.paddlenlp_model`).

What has no torch meaning: ``tensor_parallel_degree`` (refused above 1), ``dtype`` (float32
adapters, as on Paddle), PaddleNLP's ``Trainer`` (use transformers' with
``peftplug.backends.torch.trainer.AdapterCheckpointCallback``), the model's ``config.json`` in a
save (a transformers config, which PaddleNLP cannot read). Tensors keep torch's layout (``lora_A``
``[r, in]``) in ``get_trainable_state_dict`` / ``set_state_dict``; the files are PaddleNLP's, in
its module tree and layout, so ``paddlenlp.peft.LoRAModel`` loads them on the Paddle twin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import peftplug
from peftplug.adapter_io import adapter_files, read_adapter, replaced_adapter_files
from peftplug.backends.torch.layer import TorchAdapterLayer
from peftplug.errors import AdapterLoadError, ConfigError
from peftplug.files import write_files_atomically
from peftplug.interop.cross_framework import format_of, state_for_format, state_for_model
from peftplug.model.delegation import DelegatesToInner
from peftplug.model.paddlenlp_report import trainable_line
from peftplug.model.peft_model import DEFAULT_ADAPTER
from peftplug.plugins.formats.paddlenlp_targets import targets_to_paddlenlp
from peftplug.plugins.lora.paddlenlp_api import LoRAConfig, as_lora_config
from peftplug.plugins.lora.paddlenlp_codec import KEY_PREFIX, tensors_from_paddlenlp
from peftplug.plugins.lora.paddlenlp_model import PaddleNLPLoRAMethods
from peftplug.state import AdapterState

FORMAT = "paddlenlp"
WEIGHTS_NAME = "lora_model_state.pdparams"


class TorchLoRAModel(PaddleNLPLoRAMethods, DelegatesToInner, nn.Module):
    """``LoRAModel(model, lora_config)`` for a ``torch.nn.Module``: the targeted linear layers
    become peftplug's torch LoRA layers, in place; ``self.model`` is the model."""

    _inner = "model"  # attributes the wrapper lacks are the model's (``config``, ``generate``, ...)

    def __init__(self, model: nn.Module, lora_config: Any) -> None:
        nn.Module.__init__(self)
        lora_config = as_lora_config(lora_config)
        lora_config.check_supported()
        if lora_config.tensor_parallel_degree > 1:
            raise ConfigError("LoRAConfig", "tensor_parallel_degree", lora_config.tensor_parallel_degree,
                              "1 or less on torch: shard with torch's parallelize_module and peftplug.get_peft_model")  # fmt: skip
        # A target that is no linear layer is a TargetModulesError (a ValueError, as PaddleNLP raises).
        peft_model = peftplug.get_peft_model(model, lora_config.to_peftplug())
        object.__setattr__(self, "peft_model", peft_model)  # not a submodule: its parameters are self.model's
        if lora_config.dtype is None:
            lora_config.dtype = str(torch.get_default_dtype()).removeprefix("torch.")
        self.lora_config = lora_config
        self.model = model
        self.mark_only_lora_as_trainable()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model's forward, through its LoRA layers."""
        return self.model(*args, **kwargs)

    # ------------------------------------------------------------ the framework's operations
    def _adapted_modules(self) -> set[str]:
        return {name for name, module in self.model.named_modules() if isinstance(module, TorchAdapterLayer)}

    def _state_items(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.model.state_dict(keep_vars=True).items())

    @staticmethod
    def _is_trainable(tensor: torch.Tensor) -> bool:
        return isinstance(tensor, nn.Parameter) and tensor.requires_grad

    @staticmethod
    def _set_trainable(tensor: torch.Tensor, trainable: bool) -> None:
        if isinstance(tensor, nn.Parameter):
            tensor.requires_grad_(trainable)

    # ------------------------------------------------------------ the rest of PaddleNLP's API
    def print_trainable_parameters(self) -> None:
        """Print PaddleNLP's line (PaddleNLP logs it at debug level; torch has no PaddleNLP logger)."""
        tensors = [tensor for _, tensor in self._state_items()]
        trainable = sum(tensor.numel() for tensor in tensors if self._is_trainable(tensor))
        print(trainable_line(frozen=sum(tensor.numel() for tensor in tensors) - trainable, trainable=trainable))

    def set_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy tensors named as PaddleNLP names them, in torch's layout, into the model; a key
        the model lacks or a shape that differs is an error naming it, before anything is copied."""
        own = dict(self.named_paddlenlp_parameters())
        values = {key: torch.as_tensor(np.asarray(value)) for key, value in state_dict.items()}
        for key, value in values.items():
            if key not in own or tuple(value.shape) != tuple(own[key].shape):
                expected = list(own[key].shape) if key in own else "no such tensor"
                raise AdapterLoadError(
                    f"tensor {key!r}: shape {list(value.shape)} in the state dict, model: {expected}"
                )
        with torch.no_grad():
            for key, value in values.items():
                own[key].copy_(value.to(own[key].dtype))

    def train(self, mode: bool = True) -> TorchLoRAModel:
        """Training mode; with ``merge_weights`` the LoRA update is taken out of the weights first."""
        if self.lora_config.merge_weights and mode:
            self.unmerge()
        nn.Module.train(self, mode)
        if self.lora_config.merge_weights and not mode:
            self.merge()
        return self

    def save_pretrained(self, save_directory: str, merge_tensor_parallel: bool = False, **kwargs: Any) -> None:
        """Write PaddleNLP's ``lora_config.json`` and ``lora_model_state.pdparams`` (the trainable
        tensors, in PaddleNLP's module tree and layout), which ``paddlenlp.peft.LoRAModel`` loads
        on the Paddle twin of the model. ``merge_tensor_parallel`` changes nothing here."""
        directory = Path(save_directory)
        if directory.is_file():
            raise ConfigError("LoRAModel.save_pretrained", "save_directory", str(directory), "a directory, not a file")
        # In Paddle's layout (lora_A [in, r]), as the codec reads PaddleNLP's tensors.
        trainable = {
            name: tensor.detach().cpu().numpy().T if name.endswith((".lora_A", ".lora_B")) else tensor.detach().cpu().numpy()
            for name, tensor in self.get_trainable_state_dict().items()
        }  # fmt: skip
        config = self.peft_model.peft_config[DEFAULT_ADAPTER]
        state = AdapterState(config, tensors_from_paddlenlp(trainable, WEIGHTS_NAME))
        files = adapter_files(state_for_format(state, self.model, FORMAT), FORMAT)
        write_files_atomically(directory, files, replaces=replaced_adapter_files(directory))

    @classmethod
    def from_pretrained(cls, model: nn.Module, lora_path: str, **kwargs: Any) -> TorchLoRAModel:
        """LoRA from PaddleNLP's files (written on either framework) on the torch ``model``;
        ``lora_config=`` replaces the saved config."""
        state = state_for_model(read_adapter(lora_path, FORMAT), model, format_of(Path(lora_path), FORMAT))
        lora_config = kwargs.pop("lora_config", None)
        if lora_config is None:
            lora_config = _in_torch_tree(LoRAConfig.from_pretrained(lora_path), state)
        lora_config = as_lora_config(lora_config)
        lora_model = cls(model, lora_config)
        lora_model.peft_model.load_adapter_state(state, DEFAULT_ADAPTER)
        lora_model.mark_only_lora_as_trainable()
        return lora_model


def _in_torch_tree(config: LoRAConfig, state: AdapterState) -> LoRAConfig:
    """``config`` (read from PaddleNLP's files, its regexes naming PaddleNLP's modules) with its
    targets and trainable parameters named as in the torch model, from the state moved there."""
    config.target_modules = targets_to_paddlenlp(state.config.target_modules)
    others = [
        key.removeprefix(KEY_PREFIX) for key in state.tensors if ".lora_" not in key and ".base_layer." not in key
    ]
    config.trainable_modules = [re.escape(name) for name in others] or None
    return config
