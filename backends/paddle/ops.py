"""The PaddlePaddle implementation of the core's BackendOps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from paddle import nn

from peftplug.backends.paddle.layer import PaddleAdapterLayer, copy_into, to_numpy
from peftplug.backends.paddle.model import PaddlePeftModel
from peftplug.backends.paddle.modules_to_save import ModulesToSaveLayer
from peftplug.errors import BackendError


class PaddleBackend:
    """Walks, replaces, freezes and converts Paddle layers for the framework-free core.

    Tensors cross this edge in Paddle's own layout (``to_numpy``, ``copy_into``); the adapter
    layers convert their own tensors to HF PEFT's layout (``export_adapter``).
    """

    name = "paddle"

    def create_peft_model(self, model: nn.Layer, method: Any) -> PaddlePeftModel:
        """Wrap ``model`` in a :class:`PaddlePeftModel`."""
        return PaddlePeftModel(model, self, method)

    def is_adapter_layer(self, module: Any) -> bool:
        """True for peftplug's Paddle adapter layers."""
        return isinstance(module, PaddleAdapterLayer)

    def named_modules(self, root: nn.Layer, prefix: str = "") -> Iterator[tuple[str, nn.Layer]]:
        """(name, layer) in model order, not descending into adapter layers."""
        yield prefix, root
        if isinstance(root, PaddleAdapterLayer):
            return
        for child_name, child in root._sub_layers.items():
            if child is not None:
                yield from self.named_modules(child, f"{prefix}.{child_name}" if prefix else child_name)

    def get_module(self, root: nn.Layer, name: str) -> nn.Layer:
        """The sublayer at dotted ``name``."""
        module = root
        for part in name.split(".") if name else []:
            module = module._sub_layers[part]
        return module

    def replace_module(self, root: nn.Layer, name: str, new: nn.Layer) -> None:
        """Put ``new`` where ``name`` is; the new layer takes the old one's train/eval mode."""
        parent_name, _, child_name = name.rpartition(".")
        parent = self.get_module(root, parent_name)
        old = parent._sub_layers[child_name]
        # Flags only: Layer.train()/eval() would also switch Paddle's global tracer mode.
        for layer in [new, *new.sublayers()]:
            layer.training = old.training
        # Straight into _sub_layers: LayerList children are named "0", "1", ... and setattr
        # would not find them there.
        parent._sub_layers[child_name] = new

    def named_parameters(self, root: nn.Layer) -> Iterator[tuple[str, Any]]:
        """Every parameter once (shared ones under their first name)."""
        return root.named_parameters()

    def numel(self, parameter: Any) -> int:
        """Number of values, as HF PEFT counts them: of the whole tensor when it is split over
        fleet's model-parallel ranks, so a sharded model counts as the unsharded one."""
        from peftplug.backends.paddle.tensor_parallel import pieces_of

        return math.prod(parameter.shape) * pieces_of(parameter)

    def is_trainable(self, parameter: Any) -> bool:
        """``not stop_gradient``."""
        return not parameter.stop_gradient

    def set_trainable(self, parameter: Any, trainable: bool) -> None:
        """Set ``stop_gradient``."""
        parameter.stop_gradient = not trainable

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A numpy copy in Paddle's layout (bfloat16 and float16 as float32)."""
        return to_numpy(tensor)

    def from_numpy(self, array: np.ndarray) -> Any:
        """``paddle.to_tensor`` of ``array`` on the CPU."""
        import paddle

        return paddle.to_tensor(array, place=paddle.CPUPlace())

    def copy_into(self, parameter: Any, array: np.ndarray, key: str) -> None:
        """Copy with a shape check naming ``key``."""
        copy_into(parameter, array, key)

    def state_tensors(self, model: Any) -> dict[str, Any]:
        """``state_dict()``: Paddle gives the parameters and buffers themselves, a tied one once
        per name as the same object."""
        return dict(model.state_dict())

    def model_type(self, model: nn.Layer) -> str | None:
        """``model.config.model_type`` for PaddleNLP models, else None."""
        return getattr(self.model_config(model), "model_type", None) or None

    def is_linear(self, module: Any) -> bool:
        """``paddle.nn.Linear`` and fleet's column/row-parallel linears (PaddleNLP's output heads
        are their own classes: never linear)."""
        from peftplug.backends.paddle.tensor_parallel import is_parallel_linear

        return isinstance(module, nn.Linear) or is_parallel_linear(module)

    def output_layer_names(self, model: nn.Layer) -> list[str]:
        """The name of the output embedding (``lm_head``), which ``all-linear`` leaves out."""
        get_output = getattr(model, "get_output_embeddings", None)
        try:
            output = get_output() if callable(get_output) else None
        except NotImplementedError:
            output = None
        if output is None:
            return []
        return [name for name, module in model.named_sublayers() if module is output]

    def wrap_module_to_save(self, module: nn.Layer, adapter_name: str) -> ModulesToSaveLayer:
        """A :class:`ModulesToSaveLayer` around ``module``."""
        return ModulesToSaveLayer(module, adapter_name)

    def model_config(self, model: nn.Layer) -> Any:
        """``model.config`` (a PaddleNLP ``PretrainedConfig``), or None for plain layers."""
        return getattr(model, "config", None)

    def prepare_for_kbit_training(self, model: nn.Layer, use_gradient_checkpointing: bool, checkpointing: dict) -> None:
        """Refused: PaddleNLP trains its weight-only quantized layers without such a step."""
        raise BackendError(
            "prepare_model_for_kbit_training is HF PEFT's preparation of a bitsandbytes-quantized transformers "
            f"model; this is a Paddle model ({type(model).__name__}), which PaddleNLP trains without it"
        )

    def tensor_parallel(self, model: nn.Layer) -> Any:
        """The :class:`~peftplug.backends.paddle.tensor_parallel.PaddleTensorParallelGroup` of a
        model holding fleet parallel layers over 2 or more ranks, else None."""
        from peftplug.backends.paddle.tensor_parallel import tensor_parallel_group

        return tensor_parallel_group(model)

    def attach_prompt_encoder(self, peft_model: PaddlePeftModel, adapter_name: str, encoder: Any, config: Any) -> None:
        """Attach a prompt-learning encoder (see :mod:`peftplug.backends.paddle.prompt`)."""
        from peftplug.backends.paddle.prompt import attach_prompt_encoder

        attach_prompt_encoder(peft_model, adapter_name, encoder, config)

    def prompt_encoders(self, peft_model: PaddlePeftModel) -> dict[str, Any]:
        """The attached prompt encoders by adapter name (empty for layer methods)."""
        from peftplug.backends.paddle.prompt import prompt_encoders

        return prompt_encoders(peft_model)

    def remove_prompt_encoder(self, peft_model: PaddlePeftModel, adapter_name: str) -> None:
        """Detach the prompt encoder of ``adapter_name``."""
        from peftplug.backends.paddle.prompt import remove_prompt_encoder

        remove_prompt_encoder(peft_model, adapter_name)
