"""Prompt learning on PyTorch: the encoders' shared base, and forward / generate with virtual tokens.

A prompt-learning method (prompt tuning, P-tuning, prefix tuning) wraps no layer: its plugin
builds a :class:`TorchPromptEncoder` (its declared ``prompt_encoders``), the backend attaches it
to the :class:`~peftplug.backends.torch.model.TorchPeftModel` as ``prompt_encoder[adapter]``
beside ``word_embeddings`` (the base model's input embeddings), and the functions below run the
base model with the active adapter's virtual tokens, by task type, as HF PEFT's
``PeftModelForCausalLM`` / ``ForSeq2SeqLM`` / ``ForSequenceClassification`` do:

- ``injects == "embeddings"`` (prompt tuning, P-tuning): the virtual-token embeddings are put
  before ``inputs_embeds``; the attention mask gets ``T`` leading ones and causal-LM labels
  ``T`` leading -100. For seq2seq only the encoder input gets them.
- ``injects == "past_key_values"`` (prefix tuning): the encoder builds a transformers ``Cache``
  holding ``T`` learned keys and values per layer; the attention mask (the decoder's, for
  seq2seq) gets ``T`` leading ones, explicit position ids are offset by ``T``.

``generate`` returns no virtual tokens: they are inputs (or cache entries), never ids.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from peftplug.backends.torch.layer import copy_into, to_numpy
from peftplug.errors import ConfigError, PeftplugError
from peftplug.model.prompt_encoder import PromptEncoderBase

if TYPE_CHECKING:
    from peftplug.backends.torch.model import TorchPeftModel

PROMPT_TASK_TYPES = ("CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS")
IGNORE_INDEX = -100


class TorchPromptEncoder(PromptEncoderBase, nn.Module):
    """What the three prompt-learning encoders share on PyTorch (the core's PromptEncoder protocol).

    A subclass sets ``injects`` and builds ``self.embedding`` (an ``nn.Embedding``), plus its
    reparameterisation network when ``reparameterised``, and implements ``table`` and
    ``_drop_network`` (see :class:`peftplug.model.prompt_encoder.PromptEncoderBase`, which holds the
    loading rules).
    """

    # ------------------------------------------------------------ for the model
    def virtual_embeddings(self, batch_size: int) -> torch.Tensor:
        """The virtual-token embeddings for a batch, ``[batch, rows, width]`` (one computation,
        expanded: HF PEFT computes one row of the batch and repeats it too)."""
        table = self.table()
        return table.unsqueeze(0).expand(batch_size, -1, -1)

    # ------------------------------------------------------------ PromptEncoder protocol
    def set_trainable(self, trainable: bool) -> None:
        """Every parameter of the encoder trainable, or all frozen."""
        self.requires_grad_(trainable)

    def export_prompt(self) -> dict[str, np.ndarray]:
        """``{"prompt_embeddings": table}``, computed without dropout (what HF PEFT loads)."""
        with torch.no_grad(), _eval_mode(self):
            return {"prompt_embeddings": to_numpy(self.table())}

    def export_encoder(self) -> dict[str, np.ndarray]:
        """The whole encoder's state (embedding and network) when it is reparameterised, else
        nothing: ``prompt_embeddings`` is then its whole state."""
        if not self.reparameterised:
            return {}
        return {key: to_numpy(value) for key, value in self.state_dict().items()}

    # ------------------------------------------------------------ for PromptEncoderBase
    def _table_array(self) -> np.ndarray:
        """The output table without gradients or dropout, float32."""
        with torch.no_grad(), _eval_mode(self):
            return self.table().float().cpu().numpy()

    def _copy_table(self, saved: np.ndarray) -> None:
        """Copy ``saved`` into ``embedding.weight``."""
        copy_into(self.embedding.weight, saved, "prompt_embeddings")

    def _copy_encoder(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy ``arrays`` into the state dict's tensors of the same names."""
        own = self.state_dict(keep_vars=True)
        for key, value in arrays.items():
            copy_into(own[key], value, f"prompt_encoder.{key}")

    def _use_table(self, saved: np.ndarray) -> None:
        """Turn into a plain table holding ``saved`` (trainable as the old embedding was)."""
        old = self.embedding.weight
        self._drop_network()
        self.embedding = nn.Embedding(*saved.shape, device=old.device, dtype=old.dtype)
        copy_into(self.embedding.weight, saved, "prompt_embeddings")
        self.embedding.weight.requires_grad_(old.requires_grad)
        self.reparameterised = False


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


# ---------------------------------------------------------------------- the base model's parts
def input_embeddings(model: nn.Module) -> nn.Module:
    """The base model's word embeddings, found as HF PEFT finds them.

    ``embeddings.word_embeddings`` when the model has it (BERT-like), else the first parameter of
    the transformer backbone with one row per vocabulary entry, else ``get_input_embeddings()``.
    """
    with contextlib.suppress(AttributeError):
        return model.get_submodule("embeddings.word_embeddings")
    backbone = next((child for child in model.children() if _is_pretrained_model(child)), model)
    config = getattr(model, "config", None)
    if config is not None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        vocab_size = getattr(text_config, "vocab_size", None)
        for name, parameter in backbone.named_parameters():
            if vocab_size is not None and parameter.shape and parameter.shape[0] == vocab_size:
                return backbone.get_submodule(name.rpartition(".")[0])
    get_input = getattr(model, "get_input_embeddings", None)
    embeddings = get_input() if callable(get_input) else None
    if embeddings is None:
        raise PeftplugError(
            f"cannot find the word embeddings of {type(model).__name__}: prompt-learning methods need a model whose "
            "input embeddings get_input_embeddings() returns"
        )
    return embeddings


def _is_pretrained_model(module: nn.Module) -> bool:
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    return modeling_utils is not None and isinstance(module, modeling_utils.PreTrainedModel)


def uses_gradient_checkpointing(model: nn.Module) -> bool:
    """True when some module of ``model`` has gradient checkpointing switched on."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())


def check_task_type(config: Any) -> None:
    """Refuse task types the torch backend does not run virtual tokens for."""
    if config.task_type not in PROMPT_TASK_TYPES:
        raise ConfigError(
            type(config).__name__,
            "task_type",
            config.task_type,
            f"one of {', '.join(PROMPT_TASK_TYPES)}: prompt-learning methods need to know how the model takes "
            "its inputs (peftplug's torch backend runs virtual tokens for these task types)",
        )


def refuse_gradient_checkpointing(model: nn.Module) -> None:
    """The error for prefix tuning on a model with gradient checkpointing switched on (it names
    the switch the model's transformers has: ``activation_checkpointing_disable`` from 5.x on)."""
    switch = next(
        (
            name
            for name in ("activation_checkpointing_disable", "gradient_checkpointing_disable")
            if hasattr(model, name)
        ),
        "gradient_checkpointing_disable",
    )
    raise PeftplugError(
        "prefix tuning does not work with gradient checkpointing: the prefix reaches each layer through the "
        "key/value cache, and a checkpointed transformers layer drops the cache while training "
        "(past_key_values=None), so the prefix would silently do nothing; switch gradient checkpointing off on "
        f"{type(model).__name__} ({switch}()), or use prompt tuning or P-tuning"
    )


# ---------------------------------------------------------------------- forward
def prompt_forward(peft_model: TorchPeftModel, args: tuple, kwargs: dict) -> Any:
    """The base model's forward with the active adapter's virtual tokens, by task type."""
    base = peft_model.base_model.model
    if args:
        names = [name for name in inspect.signature(base.forward).parameters if name not in ("self", "args", "kwargs")]
        kwargs = dict(zip(names, args), **kwargs)
    name = peft_model.active_adapter
    config = peft_model.peft_config[name]
    encoder = peft_model.prompt_encoder[name]
    if (
        encoder.injects == "past_key_values"
        and peft_model.training
        and torch.is_grad_enabled()
        and uses_gradient_checkpointing(base)
    ):
        refuse_gradient_checkpointing(base)
    if config.task_type == "SEQ_2_SEQ_LM":
        return _seq2seq_forward(peft_model, base, encoder, config, kwargs)
    return _decoder_forward(peft_model, base, encoder, config, kwargs)


def _decoder_forward(
    peft_model: TorchPeftModel, base: nn.Module, encoder: TorchPromptEncoder, config: Any, kwargs: dict
) -> Any:
    """CAUSAL_LM and SEQ_CLS (one stack that reads the virtual tokens)."""
    tokens = config.num_virtual_tokens
    classify = config.task_type == "SEQ_CLS"
    input_ids = kwargs.pop("input_ids", None)
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    labels = kwargs.pop("labels", None)
    attention_mask = kwargs.pop("attention_mask", None)
    batch_size = _batch_size(input_ids, inputs_embeds)
    if attention_mask is not None:
        attention_mask = _prepend_ones(attention_mask, tokens)
    prefix = encoder.injects == "past_key_values"
    adjust_position_and_type_ids(kwargs, tokens, prefix, remove_token_type_ids=not classify)
    if prefix:
        kwargs["past_key_values"] = encoder.past_key_values(batch_size, _model_dtype(base))
        if classify and "past_key_values" not in inspect.signature(base.forward).parameters:
            return _classify_with_prefix(
                peft_model, base, config, input_ids, inputs_embeds, attention_mask, labels, kwargs
            )
        return base(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )
    if classify and kwargs.get("token_type_ids") is not None:
        token_type_ids = kwargs["token_type_ids"]
        zeros = torch.zeros(batch_size, tokens, dtype=torch.long, device=token_type_ids.device)
        kwargs["token_type_ids"] = torch.cat((zeros, token_type_ids.long()), dim=1)
    if inputs_embeds is None:
        inputs_embeds = peft_model.word_embeddings(input_ids)
    if labels is not None and not classify:
        ignored = torch.full((batch_size, tokens), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        labels = torch.cat((ignored, labels), dim=1)
    prompts = encoder.virtual_embeddings(batch_size).to(inputs_embeds.dtype)
    inputs_embeds = torch.cat((prompts, inputs_embeds), dim=1)
    return base(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)


def _seq2seq_forward(
    peft_model: TorchPeftModel, base: nn.Module, encoder: TorchPromptEncoder, config: Any, kwargs: dict
) -> Any:
    """SEQ_2_SEQ_LM: virtual tokens before the encoder's input, or a prefix in the decoder's cache."""
    tokens = config.num_virtual_tokens
    input_ids = kwargs.pop("input_ids", None)
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    attention_mask = kwargs.pop("attention_mask", None)
    batch_size = _batch_size(input_ids, inputs_embeds)
    prefix = encoder.injects == "past_key_values"
    adjust_position_and_type_ids(kwargs, tokens, prefix, remove_token_type_ids=True)
    if prefix:
        if kwargs.get("decoder_attention_mask") is not None:
            kwargs["decoder_attention_mask"] = _prepend_ones(kwargs["decoder_attention_mask"], tokens)
        kwargs["past_key_values"] = encoder.past_key_values(batch_size, _model_dtype(base))
        return base(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
    if inputs_embeds is None:
        inputs_embeds = peft_model.word_embeddings(input_ids)
    if attention_mask is not None:
        attention_mask = _prepend_ones(attention_mask, tokens)
    # HF PEFT builds num_transformer_submodules * T rows for seq2seq and feeds the first T.
    prompts = encoder.virtual_embeddings(batch_size)[:, :tokens].to(inputs_embeds.dtype)
    inputs_embeds = torch.cat((prompts, inputs_embeds), dim=1)
    return base(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


def _classify_with_prefix(
    peft_model: TorchPeftModel,
    base: nn.Module,
    config: Any,
    input_ids: Any,
    inputs_embeds: Any,
    attention_mask: Any,
    labels: Any,
    kwargs: dict,
) -> Any:
    """Sequence classification with a prefix for models whose classifier's forward takes no
    cache (BERT-like): run the backbone with the prefix, then the model's own head, as HF PEFT does."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    backbone = next((child for child in base.children() if _is_pretrained_model(child)), None)
    if backbone is None or "past_key_values" not in inspect.signature(backbone.forward).parameters:
        raise PeftplugError(f"{type(base).__name__} takes no past_key_values, which prefix tuning needs")
    return_dict = kwargs.pop("return_dict", None)
    return_dict = return_dict if return_dict is not None else getattr(base.config, "use_return_dict", True)
    outputs = backbone(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        return_dict=return_dict,
        **kwargs,
    )
    pooled = outputs[1] if len(outputs) > 1 else outputs[0]
    children = dict(base.named_children())
    if "dropout" in children:
        pooled = children["dropout"](pooled)
    wanted = config.modules_to_save or []
    head = next((module for name, module in children.items() if any(m in name for m in wanted)), None)
    if head is None:
        raise PeftplugError(
            f"cannot find the classification head of {type(base).__name__} among modules_to_save {wanted}"
        )
    logits = head(pooled)
    loss = _classification_loss(base, logits, labels) if labels is not None else None
    if not return_dict:
        output = (logits,) + tuple(outputs[2:])
        return ((loss,) + output) if loss is not None else output
    return SequenceClassifierOutput(
        loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
    )


def _classification_loss(base: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' sequence-classification loss, chosen by ``config.problem_type``."""
    model_config = base.config
    num_labels = base.num_labels
    if model_config.problem_type is None:
        if num_labels == 1:
            model_config.problem_type = "regression"
        elif num_labels > 1 and labels.dtype in (torch.long, torch.int):
            model_config.problem_type = "single_label_classification"
        else:
            model_config.problem_type = "multi_label_classification"
    if model_config.problem_type == "regression":
        mse = nn.MSELoss()
        return mse(logits.squeeze(), labels.squeeze()) if num_labels == 1 else mse(logits, labels)
    if model_config.problem_type == "single_label_classification":
        return nn.CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    return nn.BCEWithLogitsLoss()(logits, labels)


def adjust_position_and_type_ids(
    kwargs: dict, tokens: int, prefix: bool, remove_token_type_ids: bool, warn: bool = True
) -> None:
    """HF PEFT's rules for explicit ids: position ids are offset by ``tokens`` for a prefix and
    dropped otherwise (the virtual tokens take the first positions); token type ids are dropped
    unless the task keeps them (sequence classification)."""
    if kwargs.get("position_ids") is not None:
        if prefix:
            kwargs["position_ids"] = kwargs["position_ids"] + tokens
        else:
            if warn:
                warnings.warn(
                    "position ids are not supported with virtual tokens; ignoring position ids",
                    UserWarning,
                    stacklevel=4,
                )
            kwargs["position_ids"] = None
    if remove_token_type_ids and kwargs.get("token_type_ids") is not None:
        if warn:
            warnings.warn(
                "token type ids are not supported with virtual tokens; ignoring token type ids",
                UserWarning,
                stacklevel=4,
            )
        kwargs["token_type_ids"] = None


def _batch_size(input_ids: Any, inputs_embeds: Any) -> int:
    if input_ids is not None:
        return input_ids.shape[0]
    if inputs_embeds is not None:
        return inputs_embeds.shape[0]
    raise ValueError("You have to provide either input_ids or inputs_embeds")


def _prepend_ones(mask: torch.Tensor, tokens: int) -> torch.Tensor:
    ones = torch.ones(mask.shape[0], tokens, dtype=mask.dtype, device=mask.device)
    return torch.cat((ones, mask), dim=1)


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else None


# ---------------------------------------------------------------------- generate
def prompt_generate(peft_model: TorchPeftModel, args: tuple, kwargs: dict) -> Any:
    """The base model's ``generate`` with the active adapter's virtual tokens."""
    base = peft_model.base_model.model
    name = peft_model.active_adapter
    config = peft_model.peft_config[name]
    encoder = peft_model.prompt_encoder[name]
    if config.task_type == "SEQ_CLS":
        raise PeftplugError("generate needs task_type CAUSAL_LM or SEQ_2_SEQ_LM; this adapter is SEQ_CLS")
    if config.task_type == "SEQ_2_SEQ_LM":
        kwargs = dict(kwargs)
        if args:
            kwargs["input_ids"] = args[0]
            args = args[1:]
        if "input_ids" not in kwargs:
            raise ValueError("input_ids must be provided for generation with virtual tokens")
        adjust_position_and_type_ids(kwargs, config.num_virtual_tokens, encoder.injects == "past_key_values", True)
        if encoder.injects == "embeddings":
            return _seq2seq_generate_with_embeddings(peft_model, base, encoder, config, args, kwargs)
    with _prepare_inputs_patched(peft_model, base):
        return base.generate(*args, **kwargs)


def _seq2seq_generate_with_embeddings(
    peft_model: TorchPeftModel, base: nn.Module, encoder: TorchPromptEncoder, config: Any, args: tuple, kwargs: dict
) -> Any:
    """Seq2seq prompt tuning / P-tuning: the encoder reads the virtual tokens; generation itself is the base model's."""
    if "encoder_outputs" in kwargs:
        del kwargs["encoder_outputs"]
        warnings.warn(
            "`encoder_outputs` should not be passed to `generate` with virtual tokens; ignoring it",
            UserWarning,
            stacklevel=3,
        )
    tokens = config.num_virtual_tokens
    input_ids = kwargs.pop("input_ids")
    with torch.no_grad():
        inputs_embeds = peft_model.word_embeddings(input_ids)
        prompts = encoder.virtual_embeddings(inputs_embeds.shape[0])[:, :tokens].to(inputs_embeds.dtype)
    kwargs["inputs_embeds"] = torch.cat((prompts, inputs_embeds), dim=1)
    if kwargs.get("attention_mask") is not None:
        kwargs["attention_mask"] = _prepend_ones(kwargs["attention_mask"], tokens)
    return base.generate(*args, **kwargs)


@contextlib.contextmanager
def _prepare_inputs_patched(peft_model: TorchPeftModel, base: nn.Module) -> Iterator[None]:
    """Route the base model's ``prepare_inputs_for_generation`` through
    :func:`prepare_inputs_for_generation` for the duration of one ``generate`` (HF PEFT's way)."""
    original = base.prepare_inputs_for_generation
    own = base.__dict__.get("prepare_inputs_for_generation")

    def prepare(*args: Any, **kwargs: Any) -> dict:
        return prepare_inputs_for_generation(peft_model, original, args, kwargs)

    base.prepare_inputs_for_generation = prepare
    try:
        yield
    finally:
        if own is None:
            del base.__dict__["prepare_inputs_for_generation"]
        else:
            base.prepare_inputs_for_generation = own


def prepare_inputs_for_generation(peft_model: TorchPeftModel, original: Any, args: tuple, kwargs: dict) -> dict:
    """One generation step's model inputs, with the virtual tokens added where this step needs them.

    ``original`` is the base model's own ``prepare_inputs_for_generation``. Causal LM: at the
    first step the virtual tokens become the first ``inputs_embeds`` rows (prompt tuning,
    P-tuning) or the cache's first ``T`` entries (prefix, whose positions then start at ``T``:
    transformers 4's ``cache_position`` moves on by ``T``, and position ids, which transformers 5
    builds from the attention mask for every step, are offset by ``T``); at every step the
    attention mask gets ``T`` leading ones, and only the newest token is fed once the cache holds
    the rest. Seq2seq prefix: the decoder's cache starts with the prefix.
    """
    name = peft_model.active_adapter
    config = peft_model.peft_config[name]
    encoder = peft_model.prompt_encoder[name]
    base = peft_model.base_model.model
    model_kwargs = original(*args, **kwargs)
    prefix = encoder.injects == "past_key_values"
    tokens = config.num_virtual_tokens
    cache = model_kwargs.get("past_key_values")
    if config.task_type == "SEQ_2_SEQ_LM":
        if prefix:
            first = kwargs.get("is_first_iteration")
            if first is None:  # transformers 4.x
                first = cache is None or (_is_cache(cache) and cache.get_seq_length() == 0)
            if first:
                batch_size = model_kwargs["decoder_input_ids"].shape[0]
                model_kwargs["past_key_values"] = encoder.past_key_values(batch_size, _model_dtype(base))
        return model_kwargs

    cache_position = model_kwargs.get("cache_position")
    is_prefill = cache_position is not None and bool(cache_position[0] == 0)
    input_ids = model_kwargs.get("input_ids")
    if cache is not None and input_ids is not None:
        seen = cache.get_seq_length() if _is_cache(cache) else cache[0][0].shape[-2]
        if seen >= input_ids.shape[1]:
            # The cache holds the virtual tokens too: only the newest token is new.
            model_kwargs["input_ids"] = input_ids = input_ids[:, -1:]
    attention_mask = model_kwargs.get("attention_mask")
    if attention_mask is not None:
        if isinstance(attention_mask, dict):
            if len(attention_mask) != 1:
                raise PeftplugError(f"expected a single attention mask during generation, got {len(attention_mask)}")
            attention_mask = next(iter(attention_mask.values()))
        if attention_mask.dim() != 2:
            raise PeftplugError(
                "generation with virtual tokens needs a 2D attention mask; this model prepared a "
                f"{attention_mask.dim()}D one (a static or compiled cache?): use the default dynamic cache"
            )
        model_kwargs["attention_mask"] = _prepend_ones(attention_mask, tokens)
    adjust_position_and_type_ids(model_kwargs, tokens, prefix, remove_token_type_ids=True, warn=False)
    needs_prompt = cache is None or (_is_cache(cache) and not cache.get_seq_length())
    if needs_prompt and prefix:
        model_kwargs["past_key_values"] = encoder.past_key_values(input_ids.shape[0], _model_dtype(base))
    elif needs_prompt:
        inputs_embeds = peft_model.word_embeddings(input_ids)
        prompts = encoder.virtual_embeddings(input_ids.shape[0]).to(inputs_embeds.dtype)
        model_kwargs["inputs_embeds"] = torch.cat((prompts, inputs_embeds), dim=1)
        model_kwargs["input_ids"] = None
    if is_prefill and prefix:
        # In place on purpose: generate holds the same tensor and counts on from it, so later
        # steps' positions include the T cache entries of the prefix (as with HF PEFT).
        model_kwargs["cache_position"] += tokens
    elif not prefix:
        # The model derives positions from the (longer) inputs_embeds and the cache.
        model_kwargs.pop("cache_position", None)
    return model_kwargs


def _is_cache(value: Any) -> bool:
    cache_utils = sys.modules.get("transformers.cache_utils")
    return cache_utils is not None and isinstance(value, cache_utils.Cache)
