"""PaddleNLP's ``LoRAModel`` on Paddle, built on peftplug's LoRA (:func:`peftplug.get_peft_model`).

The class subclasses ``paddlenlp.peft.LoRAModel`` only so that ``isinstance`` holds where
PaddleNLP checks it (its ``Trainer`` then saves LoRA files in each checkpoint and loads them
back); none of PaddleNLP's LoRA code runs: every method it uses is defined here or in
:mod:`peftplug.plugins.lora.paddlenlp_model` (PaddleNLP's names and freezing rules).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddlenlp.peft import LoRAModel as PaddleNLPLoRAModel
from paddlenlp.utils.log import logger

import peftplug
from peftplug.adapter_io import adapter_files, read_adapter, replaced_adapter_files
from peftplug.backends.paddle.layer import PaddleAdapterLayer, copy_into, to_numpy
from peftplug.backends.paddle.paddlenlp_wrapper import (
    adopt_model_degree,
    model_attribute,
    refuse_tensor_parallel,
    trainable_line,
    writes_here,
)
from peftplug.errors import AdapterKeysWarning, AdapterLoadError, ConfigError, some_names
from peftplug.files import write_files_atomically
from peftplug.interop.cross_framework import state_for_format
from peftplug.model.peft_model import DEFAULT_ADAPTER
from peftplug.plugins.lora.paddlenlp_api import LoRAConfig, as_lora_config
from peftplug.plugins.lora.paddlenlp_codec import tensors_from_paddlenlp, tensors_to_paddlenlp
from peftplug.plugins.lora.paddlenlp_model import PaddleNLPLoRAMethods
from peftplug.state import AdapterState

FORMAT = "paddlenlp"
WEIGHTS_NAME = "lora_model_state.pdparams"


class PaddleLoRAModel(PaddleNLPLoRAMethods, PaddleNLPLoRAModel):
    """``LoRAModel(model, lora_config)`` for a ``paddle.nn.Layer``: the model's targeted linear
    layers become peftplug LoRA layers, in place; ``self.model`` is the model."""

    __getattr__ = model_attribute

    def __init__(self, model: nn.Layer, lora_config: Any) -> None:
        nn.Layer.__init__(self)
        lora_config = as_lora_config(lora_config)
        lora_config.check_supported()
        model_degree = refuse_tensor_parallel("LoRAModel", model)
        # Built before self.model is set: a target that cannot be adapted leaves everything as it was.
        # A target that is no linear layer is a TargetModulesError (a ValueError, as PaddleNLP raises).
        peft_model = peftplug.get_peft_model(model, lora_config.to_peftplug())
        object.__setattr__(self, "peft_model", peft_model)  # not a sublayer: its parameters are self.model's
        self.quantized = False
        self.is_pipelinemodel = False
        self.lora_split_mapping: dict[str, bool] = {}
        if lora_config.dtype is None:
            lora_config.dtype = paddle.get_default_dtype()
        self.lora_config = lora_config
        self.model = model
        adopt_model_degree(lora_config, model_degree, "lora_config")
        logger.info("Mark only lora and trainable_module as trainable.")
        self.mark_only_lora_as_trainable()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model's forward, through its LoRA layers."""
        return self.model(*args, **kwargs)

    # ------------------------------------------------------------ names
    def _adapted_modules(self) -> set[str]:
        return {name for name, layer in self.model.named_sublayers() if isinstance(layer, PaddleAdapterLayer)}

    def _state_items(self) -> list[tuple[str, paddle.Tensor]]:
        return list(self.model.state_dict().items())

    @staticmethod
    def _is_trainable(tensor: paddle.Tensor) -> bool:
        return not tensor.stop_gradient

    @staticmethod
    def _set_trainable(tensor: paddle.Tensor, trainable: bool) -> None:
        tensor.stop_gradient = not trainable

    def print_trainable_parameters(self) -> None:
        """PaddleNLP's line (logged at debug level, as PaddleNLP logs it): frozen, trainable, total, share."""
        logger.debug(trainable_line(self.model.state_dict().values()))

    def set_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy tensors named as PaddleNLP names them (``get_trainable_state_dict``'s names; numpy
        arrays or tensors) into the model; a shape that differs is an error naming the key, checked
        for every key before any is copied. Keys the model lacks are skipped with a warning."""
        own = dict(self.named_paddlenlp_parameters())
        unknown = sorted(set(state_dict) - set(own))
        arrays = {key: _as_array(value) for key, value in state_dict.items() if key in own}
        for key, array in arrays.items():
            if tuple(array.shape) != tuple(own[key].shape):
                raise AdapterLoadError(
                    f"tensor {key!r} has shape {list(array.shape)} in the state dict but {list(own[key].shape)} in the model"
                )
        for key, array in arrays.items():
            copy_into(own[key], array, key)
        if unknown:
            warnings.warn(f"LoRAModel.set_state_dict: keys the model lacks were skipped: {some_names(unknown)}",
                          AdapterKeysWarning, stacklevel=2)  # fmt: skip

    # ------------------------------------------------------------ modes
    def train(self) -> None:
        """Training mode; with ``merge_weights`` the LoRA update is taken out of the weights first."""
        if self.lora_config.merge_weights:
            self.unmerge()
        nn.Layer.train(self)

    def eval(self) -> None:
        """Evaluation mode; with ``merge_weights`` the LoRA update is merged into the weights."""
        nn.Layer.eval(self)
        if self.lora_config.merge_weights:
            self.merge()

    # ------------------------------------------------------------ files
    def save_pretrained(self, save_directory: str, merge_tensor_parallel: bool = False, **kwargs: Any) -> None:
        """Write PaddleNLP's files: ``lora_model_state.pdparams`` (the trainable tensors),
        ``lora_config.json`` and, unless ``save_model_config=False``, the model's ``config.json``.
        ``merge_tensor_parallel`` changes nothing on a single card, as in PaddleNLP; the keyword
        arguments PaddleNLP's ``Trainer`` passes (``variant`` empty, ``is_main_process``,
        ``save_function``, ``max_shard_size``) are accepted."""
        if not writes_here("LoRAModel", save_directory, kwargs):
            return
        directory = Path(save_directory)
        trainable = {name: to_numpy(tensor) for name, tensor in self.get_trainable_state_dict().items()}
        state = AdapterState(
            self.peft_model.peft_config[DEFAULT_ADAPTER], tensors_from_paddlenlp(trainable, WEIGHTS_NAME)
        )
        files = dict(adapter_files(state_for_format(state, self.model, FORMAT), FORMAT))
        files[LoRAConfig.file_name] = self.lora_config.to_json_bytes()
        model_config = getattr(self.model, "config", None)
        if kwargs.get("save_model_config", True) and hasattr(model_config, "to_json_string"):
            files["config.json"] = model_config.to_json_string(use_diff=True).encode()
        write_files_atomically(directory, files, replaces=replaced_adapter_files(directory))

    @classmethod
    def from_pretrained(cls, model: nn.Layer, lora_path: str, **kwargs: Any) -> PaddleLoRAModel:
        """LoRA from PaddleNLP's files in ``lora_path`` on ``model``; ``lora_config=`` replaces the
        saved config. A missing weights file is an error naming it (PaddleNLP only logs it)."""
        lora_config = kwargs.pop("lora_config", None)
        lora_config = LoRAConfig.from_pretrained(lora_path) if lora_config is None else as_lora_config(lora_config)
        if lora_config.tensor_parallel_degree > 1:
            raise ConfigError("LoRAConfig", "tensor_parallel_degree", lora_config.tensor_parallel_degree,
                              "1 or less: tensor-parallel shard files load with peftplug.PeftModel.from_pretrained")  # fmt: skip
        weights = Path(lora_path) / WEIGHTS_NAME
        if not weights.is_file() and not (Path(lora_path) / "peft_model.safetensors.index.json").is_file():
            raise AdapterLoadError(f"{weights}: no LoRA weights file (lora_model_state.pdparams) in {lora_path}")
        state = read_adapter(lora_path, FORMAT)
        lora_model = cls(model, lora_config)
        lora_model.set_state_dict(tensors_to_paddlenlp(state.tensors))
        return lora_model


def _as_array(value: Any) -> np.ndarray:
    return to_numpy(value) if isinstance(value, paddle.Tensor) else np.asarray(value)
