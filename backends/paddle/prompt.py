"""Prompt learning on Paddle: attaching the encoders, and forward / generate with virtual tokens.

A prompt-learning method (prompt tuning, P-tuning, prefix tuning) wraps no layer: its plugin
builds a :class:`~peftplug.backends.paddle.prompt_encoder.PaddlePromptEncoder`, the backend
attaches it to the :class:`~peftplug.backends.paddle.model.PaddlePeftModel` as
``prompt_encoder[adapter]`` (a ``paddle.nn.LayerDict``) beside ``word_embeddings`` (the base
model's input embeddings), and the functions below run a PaddleNLP causal LM with the active
adapter's virtual tokens:

- ``injects == "embeddings"`` (prompt tuning, P-tuning): the virtual-token embeddings are put
  before ``inputs_embeds``; a 2D attention mask gets ``T`` leading ones, labels ``T`` leading
  ignore indices (PaddleNLP's causal LMs do not shift labels: ``labels[t]`` is the target of
  ``logits[t]``, and their losses drop the criterion's ``ignore_index``, -100), explicit
  position ids become ``0..T-1`` followed by the given ones plus ``T``.
- ``injects == "past_key_values"`` (prefix tuning): each layer's cache starts with the prefix's
  ``T`` keys and values, in the layout of the model's family (see :data:`PREFIX_CACHE_LAYOUTS`),
  the attention mask gets ``T`` leading ones, and position ids are left as they are: exactly
  what PaddleNLP's own ``PrefixModelForCausalLM`` does (its Llama restarts positions at 0 after
  the prefix, where HF PEFT offsets them by ``T``), so PaddleNLP's prefix files give the same
  logits here as there.

``generate`` is PaddleNLP's, with the model's ``prepare_inputs_for_generation`` patched for its
duration (PaddleNLP's and HF PEFT's way); it returns only new tokens, never virtual ones.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import paddle
from paddle import nn

from peftplug.errors import ConfigError, PeftplugError

if TYPE_CHECKING:
    from peftplug.backends.paddle.model import PaddlePeftModel

PROMPT_TASK_TYPES = ("CAUSAL_LM",)
DEFAULT_IGNORE_INDEX = -100
# PaddleNLP model families whose attention takes a per-layer (keys, values) cache of shape
# [batch, seq, heads, head_dim] (sequence on axis 1), concatenated before the new keys; the
# keyword that carries it is found in the model's forward (Llama: past_key_values, Bloom: cache).
PREFIX_CACHE_LAYOUTS = {"llama": "[batch, seq, kv_heads, head_dim]", "bloom": "[batch, seq, heads, head_dim]"}
CACHE_KEYWORDS = ("past_key_values", "cache")


# ---------------------------------------------------------------------- the base model's parts
def input_embeddings(model: nn.Layer) -> nn.Layer:
    """The base model's word embeddings (``get_input_embeddings()``)."""
    get_input = getattr(model, "get_input_embeddings", None)
    embeddings = None
    with contextlib.suppress(NotImplementedError, AttributeError):
        embeddings = get_input() if callable(get_input) else None
    if embeddings is None:
        raise PeftplugError(
            f"cannot find the word embeddings of {type(model).__name__}: prompt-learning methods need a model whose "
            "input embeddings get_input_embeddings() returns"
        )
    return embeddings


def cache_keyword(model: nn.Layer) -> str:
    """The keyword of ``model.forward`` that takes the per-layer cache."""
    parameters = inspect.signature(model.forward).parameters
    for keyword in CACHE_KEYWORDS:
        if keyword in parameters:
            return keyword
    raise PeftplugError(f"{type(model).__name__}.forward takes no past_key_values or cache, which prefix tuning needs")


def _model_type(model: nn.Layer) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def check_supported(model: nn.Layer, encoder: Any, config: Any) -> None:
    """Refuse what the Paddle backend cannot run virtual tokens for, naming it: task types other
    than CAUSAL_LM, models without ``inputs_embeds`` (prompt tuning, P-tuning), model families
    whose cache layout is not known (prefix tuning)."""
    if config.task_type not in PROMPT_TASK_TYPES:
        raise ConfigError(
            type(config).__name__,
            "task_type",
            config.task_type,
            f"one of {', '.join(PROMPT_TASK_TYPES)}: peftplug's Paddle backend runs virtual tokens for PaddleNLP "
            "causal language models",
        )
    parameters = inspect.signature(model.forward).parameters
    if encoder.injects == "embeddings":
        if "inputs_embeds" not in parameters:
            raise PeftplugError(
                f"{type(model).__name__}.forward takes no inputs_embeds, which prompt tuning and P-tuning need "
                "to put the virtual tokens before the input"
            )
        return
    model_type = _model_type(model)
    if model_type not in PREFIX_CACHE_LAYOUTS:
        raise PeftplugError(
            f"prefix tuning on Paddle does not know the key/value cache layout of model_type {model_type!r} "
            f"({type(model).__name__}); supported: {', '.join(sorted(PREFIX_CACHE_LAYOUTS))}"
        )
    cache_keyword(model)


# ---------------------------------------------------------------------- attaching
def attach_prompt_encoder(peft_model: PaddlePeftModel, adapter_name: str, encoder: nn.Layer, config: Any) -> None:
    """Put ``encoder`` in ``peft_model.prompt_encoder[adapter_name]`` (a ``paddle.nn.LayerDict``)
    and the base model's word embeddings in ``peft_model.word_embeddings`` (a plain reference,
    not a registered sublayer, so its parameter is not listed twice); freeze the base model."""
    model = peft_model.base_model.model
    check_supported(model, encoder, config)
    for parameter in model.parameters():
        parameter.stop_gradient = True
    if "prompt_encoder" not in peft_model._sub_layers:
        peft_model.prompt_encoder = nn.LayerDict()
    peft_model.prompt_encoder[adapter_name] = encoder
    object.__setattr__(peft_model, "word_embeddings", input_embeddings(model))
    peft_model._prompt_learning = True


def prompt_encoders(peft_model: PaddlePeftModel) -> dict[str, nn.Layer]:
    """``peft_model.prompt_encoder`` as a dict (empty for layer methods)."""
    holder = peft_model._sub_layers.get("prompt_encoder")
    return dict(holder.items()) if holder is not None else {}


def remove_prompt_encoder(peft_model: PaddlePeftModel, adapter_name: str) -> None:
    """Delete ``peft_model.prompt_encoder[adapter_name]`` and its parameters."""
    del peft_model.prompt_encoder[adapter_name]


# ---------------------------------------------------------------------- forward
def prompt_forward(peft_model: PaddlePeftModel, args: tuple, kwargs: dict) -> Any:
    """The base model's forward with the active adapter's virtual tokens (CAUSAL_LM)."""
    base = peft_model.base_model.model
    if args:
        names = [name for name in inspect.signature(base.forward).parameters if name not in ("self", "args", "kwargs")]
        kwargs = dict(zip(names, args), **kwargs)
    else:
        kwargs = dict(kwargs)
    name = peft_model.active_adapter
    config = peft_model.peft_config[name]
    encoder = peft_model.prompt_encoder[name]
    tokens = config.num_virtual_tokens
    input_ids = kwargs.pop("input_ids", None)
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    attention_mask = kwargs.pop("attention_mask", None)
    batch_size = _batch_size(input_ids, inputs_embeds)
    if encoder.injects == "past_key_values":
        keyword = cache_keyword(base)
        if kwargs.get(keyword) is not None:
            raise PeftplugError(f"{keyword} cannot be passed to a prefix-tuned model: the prefix is the cache")
        kwargs.pop("past_key_values", None)
        kwargs.pop("cache", None)
        kwargs[keyword] = encoder.past_key_values(batch_size, _model_dtype(peft_model))
        if attention_mask is not None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
            attention_mask = _mask_with_prefix(encoder, shape, attention_mask, tokens)
        return base(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
    if kwargs.get("token_type_ids") is not None:
        warnings.warn("token type ids are not supported with virtual tokens; ignoring them", UserWarning, stacklevel=4)
    kwargs.pop("token_type_ids", None)
    if inputs_embeds is None:
        inputs_embeds = peft_model.word_embeddings(input_ids)
    if attention_mask is not None:
        attention_mask = _prepend_ones(attention_mask, tokens, "attention_mask")
    if kwargs.get("labels") is not None:
        labels = kwargs["labels"]
        ignored = paddle.full([batch_size, tokens], ignore_index(base), dtype=labels.dtype)
        kwargs["labels"] = paddle.concat([ignored, labels], axis=1)
    if kwargs.get("position_ids") is not None:
        kwargs["position_ids"] = _positions_with_virtual_tokens(kwargs["position_ids"], tokens)
    prompts = encoder.virtual_embeddings(batch_size).astype(inputs_embeds.dtype)
    inputs_embeds = paddle.concat([prompts, inputs_embeds], axis=1)
    return base(input_ids=None, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


def ignore_index(model: nn.Layer) -> int:
    """The label value the model's loss ignores (its criterion's ``ignore_index``, else -100)."""
    value = getattr(getattr(model, "criterion", None), "ignore_index", None)
    return int(value) if isinstance(value, int) else DEFAULT_IGNORE_INDEX


def _positions_with_virtual_tokens(position_ids: paddle.Tensor, tokens: int) -> paddle.Tensor:
    """``0..T-1`` for the virtual tokens, then the given positions moved on by ``T``."""
    batch_size = position_ids.shape[0]
    virtual = paddle.arange(tokens, dtype=position_ids.dtype).unsqueeze(0).expand([batch_size, tokens])
    return paddle.concat([virtual, position_ids + tokens], axis=1)


def _pad_mask_for_prefix(mask: paddle.Tensor, tokens: int) -> paddle.Tensor:
    """``T`` leading ones on the key axis of a 2D, 3D or 4D mask (PaddleNLP's prefix model's rule)."""
    if mask.ndim not in (2, 3, 4):
        raise PeftplugError(f"attention_mask of shape {list(mask.shape)}: expected 2, 3 or 4 dimensions")
    ones = paddle.ones([*mask.shape[:-1], tokens], dtype=mask.dtype)
    return paddle.concat([ones, mask], axis=-1)


def _mask_with_prefix(encoder: Any, input_shape: list[int], mask: paddle.Tensor, tokens: int) -> paddle.Tensor:
    """The mask covering the prefix: the encoder's ``pad_attention_mask`` hook's, else ``T``
    leading ones on the key axis."""
    if encoder.pad_attention_mask is not None:
        return encoder.pad_attention_mask(list(input_shape), tokens, mask)
    return _pad_mask_for_prefix(mask, tokens)


def _prepend_ones(mask: paddle.Tensor, tokens: int, name: str) -> paddle.Tensor:
    """``T`` leading ones on a 2D ``[batch, seq]`` mask (the virtual tokens are always seen)."""
    if mask.ndim != 2:
        raise PeftplugError(
            f"{name} of shape {list(mask.shape)}: prompt tuning and P-tuning on Paddle need a 2D [batch, seq] mask "
            "(the virtual tokens add rows as well as columns to a 3D or 4D one)"
        )
    ones = paddle.ones([mask.shape[0], tokens], dtype=mask.dtype)
    return paddle.concat([ones, mask], axis=1)


def _batch_size(input_ids: Any, inputs_embeds: Any) -> int:
    if input_ids is not None:
        return input_ids.shape[0]
    if inputs_embeds is not None:
        return inputs_embeds.shape[0]
    raise ValueError("You have to provide either input_ids or inputs_embeds")


def _model_dtype(peft_model: PaddlePeftModel) -> Any:
    weight = getattr(peft_model.word_embeddings, "weight", None)
    return weight.dtype if weight is not None else None


# ---------------------------------------------------------------------- generate
def prompt_generate(peft_model: PaddlePeftModel, args: tuple, kwargs: dict) -> Any:
    """PaddleNLP's ``generate`` with the active adapter's virtual tokens; returns what it returns
    (the new ids and their scores), so no virtual token ever appears in the output."""
    base = peft_model.base_model.model
    kwargs = dict(kwargs)
    if args:
        kwargs["input_ids"], args = args[0], args[1:]
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("input_ids must be provided for generation with virtual tokens")
    if kwargs.get("inputs_embeds") is not None:
        raise PeftplugError("inputs_embeds cannot be passed to generate with virtual tokens; pass input_ids")
    if kwargs.get("attention_mask") is None:
        kwargs["attention_mask"] = _default_mask(base, input_ids, kwargs)
    elif kwargs["attention_mask"].ndim != 2:
        raise PeftplugError(
            f"attention_mask of shape {list(kwargs['attention_mask'].shape)}: generate with virtual tokens needs a 2D "
            "[batch, seq] mask"
        )
    with _prepare_inputs_patched(peft_model, base):
        return base.generate(*args, **kwargs)


def _default_mask(base: nn.Layer, input_ids: paddle.Tensor, kwargs: dict) -> paddle.Tensor:
    """A 2D mask with zeros at padding (PaddleNLP's rule: pad tokens, when pad differs from eos),
    instead of the 4D additive mask PaddleNLP's generate would build."""
    config = getattr(base, "config", None)
    pad = kwargs.get("pad_token_id", getattr(config, "pad_token_id", None))
    eos = kwargs.get("eos_token_id", getattr(config, "eos_token_id", None))
    if pad is not None and pad != eos and bool((input_ids == pad).any()):
        return (input_ids != pad).astype("int64")
    return paddle.ones(input_ids.shape, dtype="int64")


@contextlib.contextmanager
def _prepare_inputs_patched(peft_model: PaddlePeftModel, base: nn.Layer) -> Iterator[None]:
    """Route the base model's ``prepare_inputs_for_generation`` through
    :func:`prepare_inputs_for_generation` for the duration of one ``generate``."""
    original = base.prepare_inputs_for_generation
    own = base.__dict__.get("prepare_inputs_for_generation")

    def prepare(*args: Any, **kwargs: Any) -> dict:
        return prepare_inputs_for_generation(peft_model, original, args, kwargs)

    object.__setattr__(base, "prepare_inputs_for_generation", prepare)
    try:
        yield
    finally:
        if own is None:
            base.__dict__.pop("prepare_inputs_for_generation", None)
        else:
            object.__setattr__(base, "prepare_inputs_for_generation", own)


def prepare_inputs_for_generation(peft_model: PaddlePeftModel, original: Any, args: tuple, kwargs: dict) -> dict:
    """One generation step's model inputs, with the virtual tokens added where the step needs them.

    ``original`` is the base model's own ``prepare_inputs_for_generation``. At the first step
    (no cache yet) the virtual tokens become the first ``inputs_embeds`` rows (prompt tuning,
    P-tuning) or the cache's first ``T`` entries (prefix); at every step the attention mask gets
    ``T`` leading ones; with virtual-token embeddings, position ids are moved on by ``T``
    (the first step's get ``0..T-1`` in front).
    """
    name = peft_model.active_adapter
    config = peft_model.peft_config[name]
    encoder = peft_model.prompt_encoder[name]
    base = peft_model.base_model.model
    tokens = config.num_virtual_tokens
    model_kwargs = original(*args, **kwargs)
    keyword = next((k for k in CACHE_KEYWORDS if k in model_kwargs), None) or cache_keyword(base)
    first = model_kwargs.get(keyword) is None
    input_ids = model_kwargs.get("input_ids")
    batch_size = input_ids.shape[0]
    mask = model_kwargs.get("attention_mask")
    if mask is not None and encoder.injects == "past_key_values" and encoder.pad_attention_mask is not None:
        model_kwargs["attention_mask"] = _mask_with_prefix(encoder, input_ids.shape, mask, tokens)
    elif mask is not None:
        model_kwargs["attention_mask"] = _prepend_ones(mask, tokens, "attention_mask")
    if encoder.injects == "past_key_values":
        if first:
            model_kwargs[keyword] = encoder.past_key_values(batch_size, _model_dtype(peft_model))
        return model_kwargs
    position_ids = model_kwargs.get("position_ids")
    if first:
        inputs_embeds = peft_model.word_embeddings(input_ids)
        prompts = encoder.virtual_embeddings(batch_size).astype(inputs_embeds.dtype)
        model_kwargs["inputs_embeds"] = paddle.concat([prompts, inputs_embeds], axis=1)
        model_kwargs["input_ids"] = None
        if position_ids is not None:
            model_kwargs["position_ids"] = _positions_with_virtual_tokens(position_ids, tokens)
    elif position_ids is not None:
        model_kwargs["position_ids"] = position_ids + tokens
    return model_kwargs
