"""HF PEFT's state-dict helpers: ``get_peft_model_state_dict`` and ``set_peft_model_state_dict``.

They speak HF PEFT's keys: a model parameter ``...q_proj.lora_A.default.weight`` is
``...q_proj.lora_A.weight`` (the adapter name removed), a ``modules_to_save`` copy
``...lm_head.modules_to_save.default.weight`` is ``...lm_head.weight``, and a prompt-learning
adapter is ``prompt_embeddings``: the keys of the adapter's files. Both take a peftplug model or a
plain model :func:`peftplug.inject_adapter_in_model` adapted (keys then without the
``base_model.model.`` prefix), and run on any backend's models.
"""

from __future__ import annotations

import warnings
from collections import namedtuple
from typing import Any

from peftplug.config import AdapterConfig
from peftplug.errors import AdapterKeysWarning, ConfigError, PeftplugError
from peftplug.manager import get_plugin_manager
from peftplug.model.peft_model import DEFAULT_ADAPTER, KEY_PREFIX, PROMPT_KEY_PREFIX, PeftModel
from peftplug.state import AdapterState

# torch's ``load_state_dict`` result (``_IncompatibleKeys``), which HF PEFT returns: a named tuple
# of two lists, equal to torch's for equal lists.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def get_peft_model_state_dict(
    model: Any,
    state_dict: dict[str, Any] | None = None,
    adapter_name: str = DEFAULT_ADAPTER,
    unwrap_compiled: bool = False,
    save_embedding_layers: bool | str = "auto",
) -> dict[str, Any]:
    """The tensors of adapter ``adapter_name`` by HF PEFT's keys, as HF PEFT's function returns
    them: the model's own tensors (from ``state_dict``, default ``model.state_dict()``), and for a
    prompt-learning adapter the prompt it saves (``prompt_embeddings``, computed for P-tuning).

    ``save_embedding_layers`` may be ``"auto"`` or False: peftplug never adds the base model's
    embedding weights to an adapter (HF PEFT's ``"auto"`` does when an embedding is targeted or was
    resized), so True is refused.
    """
    if save_embedding_layers not in ("auto", False):
        raise ConfigError(
            "get_peft_model_state_dict",
            "save_embedding_layers",
            save_embedding_layers,
            '"auto" or False (peftplug saves adapters without the base model\'s embedding weights)',
        )
    if unwrap_compiled:
        model = getattr(model, "_orig_mod", model)
    peft_model, plain = peft_model_of(model)
    state = peft_model.adapter_state(adapter_name)
    wanted = {_model_side(key, plain): key for key in state.tensors}
    source = model.state_dict() if state_dict is None else state_dict
    found: dict[str, Any] = {}
    for key, value in source.items():
        file_key = _file_key(key, adapter_name)
        if file_key in wanted:
            found.setdefault(file_key, value)
    ops = peft_model._peft_ops
    return {key: found[key] if key in found else ops.from_numpy(state.tensors[saved]) for key, saved in wanted.items()}


def set_peft_model_state_dict(
    model: Any,
    peft_model_state_dict: dict[str, Any],
    adapter_name: str = DEFAULT_ADAPTER,
    ignore_mismatched_sizes: bool = False,
    low_cpu_mem_usage: bool = False,
) -> IncompatibleKeys:
    """Copy ``peft_model_state_dict`` (HF PEFT's keys, as :func:`get_peft_model_state_dict` gives
    them) into adapter ``adapter_name``, which the model must hold already.

    Returns HF PEFT's load result: ``missing_keys``, every key of ``model.state_dict()`` the dict
    did not fill (the base model's included), and ``unexpected_keys``, the dict's keys that fill
    nothing in the state dict (``prompt_embeddings`` among them, as in HF PEFT: a prompt is loaded
    into its encoder). A tensor of another shape is an error naming its key, or with
    ``ignore_mismatched_sizes=True`` left out with a warning, as HF PEFT does. Keys of the
    adapter's modules that match no module are reported, not warned about; a dict matching nothing
    at all is an error. ``low_cpu_mem_usage`` changes nothing here (the adapter's tensors exist
    already).
    """
    peft_model, plain = peft_model_of(model)
    peft_model._check_adapter(adapter_name)
    ops = peft_model._peft_ops
    model_tensors = model.state_dict()
    by_file_key: dict[str, str] = {}
    for key in model_tensors:
        by_file_key.setdefault(_file_key(key, adapter_name), key)
    given = {_model_side(key, plain): value for key, value in peft_model_state_dict.items()}
    arrays, mismatched = {}, {}
    for key, value in given.items():
        array = ops.to_numpy(value)
        target = by_file_key.get(key)
        expected = tuple(model_tensors[target].shape) if target is not None else None
        if ignore_mismatched_sizes and expected is not None and expected != array.shape:
            mismatched[key] = f"- {key}: found shape {array.shape} in the checkpoint and {expected} in the model"
            continue
        arrays[key] = array
    config = peft_model.peft_config[adapter_name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdapterKeysWarning)
        peft_model.load_adapter_state(AdapterState(config, arrays, {}), adapter_name)
    if mismatched:
        warnings.warn(
            "Some weights were not loaded because their shapes differ (ignore_mismatched_sizes=True):\n"
            + "\n".join(mismatched.values()),
            UserWarning,
            stacklevel=2,
        )
    loaded = {by_file_key[key] for key in arrays if key in by_file_key}
    return IncompatibleKeys(
        missing_keys=[_hf_name(key, config) for key in model_tensors if key not in loaded],
        unexpected_keys=[key for key in given if key not in by_file_key],
    )


def peft_model_of(model: Any) -> tuple[PeftModel, bool]:
    """``(peft model, plain)``: ``model`` itself when it is a peftplug model, else a peftplug model
    around a plain model that :func:`peftplug.inject_adapter_in_model` adapted (``plain`` True:
    its keys lack the ``base_model.model.`` prefix). Any other model is an error naming its type."""
    if isinstance(model, PeftModel):
        return model, False
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs or not all(isinstance(c, AdapterConfig) for c in configs.values()):
        raise PeftplugError(
            f"model: a {type(model).__name__} holding no peftplug adapter; pass the model get_peft_model returned, "
            "or one inject_adapter_in_model adapted"
        )
    manager = get_plugin_manager()
    backend = manager.backends.get(manager.detect_backend(model)).load()
    peft_model = backend.create_peft_model(model, manager.method_for_config(next(iter(configs.values()))))
    peft_model.peft_config = configs
    peft_model.active_adapter = next(iter(configs))
    return peft_model, True


def _file_key(model_key: str, adapter_name: str) -> str:
    """The key HF PEFT's files give a model's adapter tensor: the adapter name removed, and a
    ``modules_to_save`` copy named as the module it replaces."""
    key = model_key.replace(f".modules_to_save.{adapter_name}.", ".")
    key = key.replace(f".{adapter_name}.", ".")
    return key.removesuffix(f".{adapter_name}")


def _hf_name(key: str, config: AdapterConfig) -> str:
    """A model key as HF PEFT's model names it: its prompt-learning model holds the user's model
    directly as ``base_model`` (peftplug keeps HF's layer-method tree, ``base_model.model``)."""
    if config.is_prompt_learning and key.startswith(KEY_PREFIX):
        return PROMPT_KEY_PREFIX + key.removeprefix(KEY_PREFIX)
    return key


def _model_side(key: str, plain: bool) -> str:
    """A file key as the model's state dict names it: without ``base_model.model.`` on a plain model."""
    return key.removeprefix(KEY_PREFIX) if plain else key
