"""PaddleNLP's ``PrefixModelForCausalLM`` on Paddle, built on peftplug's prefix tuning
(:func:`peftplug.get_peft_model` with a ``PrefixTuningConfig``).

The class subclasses ``paddlenlp.peft.PrefixModelForCausalLM`` only so that ``isinstance`` holds
where PaddleNLP checks it (its ``Trainer`` then saves the prefix files in each checkpoint and
loads them back); none of PaddleNLP's prefix code runs. The forward and ``generate`` are
peftplug's (PaddleNLP's rules: the prefix is the cache, the attention mask gets the prefix's
columns, positions restart at 0); the hooks given to the constructor are set on peftplug's
prefix encoder, which calls them. Its weights are read and written through the PaddleNLP format
(``prefix_model_state.pdparams`` with PaddleNLP's keys, ``pre_caches.npy``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddlenlp.peft import PrefixModelForCausalLM as PaddleNLPPrefixModel
from paddlenlp.utils.log import logger

import peftplug
from peftplug.adapter_io import adapter_files, read_adapter, replaced_adapter_files
from peftplug.backends.paddle.layer import to_numpy
from peftplug.backends.paddle.paddlenlp_wrapper import (
    adopt_model_degree,
    model_attribute,
    refuse_tensor_parallel,
    trainable_line,
    writes_here,
)
from peftplug.errors import AdapterLoadError
from peftplug.files import write_files_atomically
from peftplug.model.peft_model import DEFAULT_ADAPTER
from peftplug.plugins.prefix_tuning.paddlenlp_api import PrefixConfig
from peftplug.plugins.prefix_tuning.paddlenlp_codec import state_from_paddlenlp
from peftplug.state import AdapterState

FORMAT = "paddlenlp"
WEIGHTS_NAME = "prefix_model_state.pdparams"


class PaddlePrefixModelForCausalLM(PaddleNLPPrefixModel):
    """``PrefixModelForCausalLM(model, prefix_config, postprocess_past_key_value=None,
    pad_attention_mask=None)`` for a PaddleNLP causal LM (Llama, Bloom): ``self.model`` is the
    frozen model, ``self.prefix_encoder`` peftplug's trainable prefix encoder.

    ``postprocess_past_key_value(prefix)`` turns the prefix ``[batch, T, 2L, heads, head_dim]``
    (keys of every layer, then values) into the model's cache, as in PaddleNLP; None gives the
    cache of PaddleNLP's Llama and Bloom (PaddleNLP passes the raw prefix then, which they
    cannot take). ``pad_attention_mask(input_shape, T, attention_mask)`` replaces the rule that
    prepends T columns of ones to the mask.
    """

    __getattr__ = model_attribute

    def __init__(
        self,
        model: nn.Layer,
        prefix_config: Any,
        postprocess_past_key_value: Callable[[paddle.Tensor], Any] | None = None,
        pad_attention_mask: Callable[..., paddle.Tensor] | None = None,
    ) -> None:
        nn.Layer.__init__(self)
        prefix_config = PrefixConfig.coerce(prefix_config, "PrefixModelForCausalLM", "prefix_config")
        prefix_config.check_supported()
        model_degree = refuse_tensor_parallel("PrefixModelForCausalLM", model)
        peft_model = peftplug.get_peft_model(model, prefix_config.to_peftplug())
        object.__setattr__(self, "peft_model", peft_model)  # not a sublayer: its parameters are listed below
        encoder = peft_model.prompt_encoder[DEFAULT_ADAPTER]
        encoder.postprocess_past_key_value = postprocess_past_key_value
        encoder.pad_attention_mask = pad_attention_mask
        if prefix_config.dtype is None:
            prefix_config.dtype = paddle.get_default_dtype()
        self.prefix_config = prefix_config
        self.model = model
        self.prefix_encoder = encoder
        self.postprocess_past_key_value = postprocess_past_key_value
        self.pad_attention_mask = pad_attention_mask
        self.head_dim = prefix_config.hidden_size // prefix_config.num_attention_heads
        self.num_heads = prefix_config.multi_query_group_num or prefix_config.num_attention_heads
        self.inference = False
        adopt_model_degree(prefix_config, model_degree, "prefix_config")
        logger.info("Mark only prefix and trainable_module as trainable.")
        self.mark_only_prefix_as_trainable()

    def forward(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor | None = None, **kwargs: Any) -> Any:
        """The model's forward with the prefix as its cache (peftplug's prefix forward)."""
        return self.peft_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def generate(self, **kwargs: Any) -> Any:
        """The model's ``generate`` with the prefix; ``input_ids`` is required, as in PaddleNLP."""
        if "input_ids" not in kwargs:
            raise ValueError("input_ids must be provided for Peft model generation")
        return self.peft_model.generate(**kwargs)

    def mark_only_prefix_as_trainable(self) -> None:
        """Freeze the model; train the prefix encoder."""
        for tensor in self.model.state_dict().values():
            tensor.stop_gradient = True
        for tensor in self.prefix_encoder.state_dict().values():
            tensor.stop_gradient = False

    def print_trainable_parameters(self) -> None:
        """PaddleNLP's line (logged at debug level, as PaddleNLP logs it): frozen, trainable, total, share."""
        tensors = [*self.model.state_dict().values(), *self.prefix_encoder.state_dict().values()]
        logger.debug(trainable_line(tensors))

    def train(self) -> None:
        """Training mode, for the model and the prefix encoder."""
        nn.Layer.train(self)

    def eval(self) -> None:
        """Evaluation mode, for the model and the prefix encoder."""
        nn.Layer.eval(self)

    def set_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the prefix encoder from PaddleNLP's keys (``0.weight``, with a projection
        ``1.weight`` ... ``3.bias``: what ``prefix_model_state.pdparams`` holds); keys or shapes
        that differ are an error naming them."""
        arrays = {key: to_numpy(v) if isinstance(v, paddle.Tensor) else np.asarray(v) for key, v in state_dict.items()}
        config = self.peft_model.peft_config[DEFAULT_ADAPTER]
        tensors, extra = state_from_paddlenlp(config, arrays, "the prefix state dict")
        self.peft_model.load_adapter_state(AdapterState(config, tensors, extra), DEFAULT_ADAPTER)

    def save_pretrained(self, save_directory: str, merge_tensor_parallel: bool = True, **kwargs: Any) -> None:
        """Write PaddleNLP's files: ``prefix_model_state.pdparams`` (the prefix encoder, PaddleNLP's
        keys), ``prefix_config.json`` and ``pre_caches.npy``. ``merge_tensor_parallel`` changes
        nothing on a single card, as in PaddleNLP."""
        if not writes_here("PrefixModelForCausalLM", save_directory, kwargs):
            return
        directory = Path(save_directory)
        files = dict(adapter_files(self.peft_model.adapter_state(DEFAULT_ADAPTER), FORMAT))
        files[PrefixConfig.file_name] = self.prefix_config.to_json_bytes()
        write_files_atomically(directory, files, replaces=replaced_adapter_files(directory))

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Layer,
        prefix_path: str,
        postprocess_past_key_value: Callable[[paddle.Tensor], Any] | None = None,
        pad_attention_mask: Callable[..., paddle.Tensor] | None = None,
    ) -> PaddlePrefixModelForCausalLM:
        """The prefix saved in ``prefix_path`` (PaddleNLP's files) on ``model``. A missing weights
        file is an error naming it (PaddleNLP only logs it and starts from a fresh prefix)."""
        prefix_config = PrefixConfig.from_pretrained(prefix_path)
        weights = Path(prefix_path) / WEIGHTS_NAME
        if not weights.is_file():
            raise AdapterLoadError(f"{weights}: no prefix weights file ({WEIGHTS_NAME}) in {prefix_path}")
        state = read_adapter(prefix_path, FORMAT)
        prefix_model = cls(model, prefix_config, postprocess_past_key_value, pad_attention_mask)
        prefix_model.peft_model.load_adapter_state(state, DEFAULT_ADAPTER)
        return prefix_model
