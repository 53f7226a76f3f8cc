"""Adapter configs: HF PEFT's field names and defaults, checked on construction.

Every method's config subclasses :class:`AdapterConfig`. ``to_dict``/``from_dict`` speak
``adapter_config.json`` exactly as HF PEFT writes it, so a user's existing file is a valid
peftplug config and ours load in ``peft``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from peftplug.errors import ConfigError

# `Union[a, b]` and `a | b` (types.UnionType) alike: field annotations use either.
_UNIONS = (Union, types.UnionType)

CONFIG_NAME = "adapter_config.json"

TASK_TYPES = (
    "SEQ_CLS",
    "SEQ_2_SEQ_LM",
    "CAUSAL_LM",
    "TOKEN_CLS",
    "QUESTION_ANS",
    "FEATURE_EXTRACTION",
)


@dataclasses.dataclass
class AdapterConfig:
    """Fields shared by every method, as in HF PEFT's ``PeftConfig``.

    Subclasses set the class attribute ``peft_type`` (``"LORA"``, ...) and add their own fields.
    ``hf_fields_at_default`` names fields HF PEFT writes that peftplug does not implement: a file
    may carry them at HF's default value (listed there), any other value is refused.
    ``hf_informational_fields`` are read and dropped silently (they change no behaviour).
    ``default_target_fields`` names the fields that, left None, take the model family's defaults:
    field name -> key of :attr:`Architecture.default_targets <peftplug.registration.Architecture>`
    (None: the method's own name, e.g. ``"lora"``).
    """

    peft_type: ClassVar[str] = ""
    is_prompt_learning: ClassVar[bool] = False
    default_target_fields: ClassVar[dict[str, str | None]] = {"target_modules": None}
    hf_fields_at_default: ClassVar[dict[str, Any]] = {}
    hf_informational_fields: ClassVar[frozenset[str]] = frozenset({"auto_mapping", "peft_version"})

    task_type: str | None = None
    base_model_name_or_path: str | None = None
    revision: str | None = None
    inference_mode: bool = False

    def __post_init__(self) -> None:
        self._check_types()
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            self._fail("task_type", self.task_type, f"one of {', '.join(TASK_TYPES)}, or None")
        self.validate()

    def validate(self) -> None:
        """Check values beyond their types; subclasses extend it and raise via ``_fail``."""

    def with_default_targets(self, defaults: dict[str, list[str]]) -> AdapterConfig:
        """A copy with ``defaults`` (field -> the model family's module names) filled in.

        The core calls it for the fields of ``default_target_fields`` left None; a method whose
        fields depend on each other (IA3's feed-forward modules) overrides it.
        """
        return dataclasses.replace(self, **defaults)

    def _fail(self, field: str, value: Any, allowed: str) -> typing.NoReturn:
        raise ConfigError(type(self).__name__, field, value, allowed)

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = hints[f.name]
            if isinstance(value, enum.Enum) and isinstance(value.value, str):
                # HF PEFT's str enums (TaskType.CAUSAL_LM, PromptTuningInit.TEXT) mean their value.
                setattr(self, f.name, value := value.value)
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and _accepts_float(expected)
                and not _matches(value, expected)
            ):
                setattr(self, f.name, value := float(value))
            if isinstance(value, tuple):
                setattr(self, f.name, value := list(value))
            if not _matches(value, expected):
                self._fail(f.name, value, f"expected {_describe(expected)}")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The config as adapter_config.json holds it (``peft_type`` included).

        Fields marked ``metadata={"serialize": False}`` (objects given at run time, such as a
        tokenizer) are left out.
        """
        data = {f.name: _plain(getattr(self, f.name)) for f in _serialized_fields(self)}
        data["peft_type"] = self.peft_type
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Build a config from a dict; unknown fields are dropped with a warning."""
        data = dict(data)
        peft_type = data.pop("peft_type", cls.peft_type)
        if peft_type != cls.peft_type:
            raise ConfigError(cls.__name__, "peft_type", peft_type, f"{cls.peft_type!r} for {cls.__name__}")
        known = {f.name for f in _serialized_fields(cls)}
        kwargs, unknown = {}, []
        for key, value in data.items():
            if key in known:
                kwargs[key] = value
            elif key in cls.hf_informational_fields:
                continue
            elif key in cls.hf_fields_at_default:
                if value != cls.hf_fields_at_default[key] and not _is_empty(value):
                    raise ConfigError(
                        cls.__name__,
                        key,
                        value,
                        f"peftplug does not implement {key}; only {cls.hf_fields_at_default[key]!r} is accepted",
                    )
            else:
                unknown.append(key)
        if unknown:
            warnings.warn(
                f"{cls.__name__}: ignoring unknown field(s) {', '.join(sorted(unknown))}",
                UserWarning,
                stacklevel=2,
            )
        return cls(**kwargs)

    def to_json_string(self) -> str:
        """adapter_config.json's text: sorted keys, indent 2, as HF PEFT writes it."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``adapter_config.json`` into ``directory`` (atomically)."""
        from peftplug.files import write_files_atomically

        write_files_atomically(Path(directory), {CONFIG_NAME: self.to_json_string().encode()})

    @classmethod
    def from_pretrained(cls, directory: str | Path, subfolder: str | None = None) -> AdapterConfig:
        """Read ``adapter_config.json`` from ``directory`` (or its ``subfolder``).

        Called on :class:`AdapterConfig` itself, the class is chosen from the file's
        ``peft_type`` through the method registry.
        """
        path = Path(directory) / (subfolder or "") / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {path.parent}")
        data = json.loads(path.read_text())
        if cls is AdapterConfig:
            return config_from_dict(data)
        return cls.from_dict(data)


@dataclasses.dataclass
class PromptLearningConfig(AdapterConfig):
    """Fields shared by the prompt-learning methods (prompt tuning, P-tuning, prefix tuning),
    as in HF PEFT's ``PromptLearningConfig``.

    These methods prepend ``num_virtual_tokens`` learned vectors instead of wrapping layers, so
    they have no ``target_modules``. The model-shape fields (``token_dim``, ``num_layers``,
    ``num_attention_heads``, ``num_transformer_submodules``) may be left None: the core fills them
    from the model's config with :meth:`with_model_config`, as HF PEFT does, and the filled values
    are what ``adapter_config.json`` records.
    """

    is_prompt_learning: ClassVar[bool] = True
    default_target_fields: ClassVar[dict[str, str | None]] = {}

    num_virtual_tokens: int | None = None
    token_dim: int | None = None
    num_transformer_submodules: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None
    modules_to_save: list[str] | None = None

    def validate(self) -> None:
        """``num_virtual_tokens`` required and positive; the shape fields positive when set."""
        if self.num_virtual_tokens is None or self.num_virtual_tokens <= 0:
            self._fail("num_virtual_tokens", self.num_virtual_tokens, "a positive integer (how many virtual tokens)")
        for name in ("token_dim", "num_attention_heads", "num_layers"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                self._fail(name, value, "a positive integer, or None to read it from the model's config")
        if self.num_transformer_submodules not in (None, 1, 2):
            self._fail(
                "num_transformer_submodules",
                self.num_transformer_submodules,
                "1 (decoder-only or encoder-only), 2 (encoder-decoder), or None to infer it from task_type",
            )

    def with_model_config(self, model_config: Any) -> PromptLearningConfig:
        """A copy with the fields left None filled from the model's config, by HF PEFT's rules.

        ``model_config`` is the model's config object (a transformers ``PretrainedConfig``, a
        PaddleNLP config, a dict) or None. ``num_layers`` comes from ``num_hidden_layers``
        (``num_layers``, ``n_layer``), ``token_dim`` from ``hidden_size`` (``n_embd``,
        ``d_model``), ``num_attention_heads`` from ``num_attention_heads`` (``n_head``,
        ``num_heads``, ``encoder_attention_heads``); the language part of a multimodal config
        (``text_config``) is used when there is one. ``num_transformer_submodules`` is 2 for
        ``SEQ_2_SEQ_LM``, else 1. A field that is None and cannot be read is an error naming it.
        """
        values = _config_values(model_config)
        updates: dict[str, Any] = {}
        lookups = {
            "num_layers": ("num_hidden_layers", "num_layers", "n_layer"),
            "token_dim": ("hidden_size", "n_embd", "d_model"),
            "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
        }
        for field, keys in lookups.items():
            if getattr(self, field) is not None:
                continue
            # num_hidden_layers is often an attribute alias (T5's num_layers), absent from to_dict().
            found = getattr(model_config, "num_hidden_layers", None) if field == "num_layers" else None
            found = found if found is not None else next((values[k] for k in keys if values.get(k) is not None), None)
            if found is None:
                self._fail(
                    field,
                    None,
                    f"set it: the model's config has none of {', '.join(keys)}"
                    if model_config is not None
                    else "set it: the model has no config to read it from",
                )
            updates[field] = int(found)
        if self.num_transformer_submodules is None:
            updates["num_transformer_submodules"] = 2 if self.task_type == "SEQ_2_SEQ_LM" else 1
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        updates.update(self._model_specific_fields({**current, **updates}, values))
        return dataclasses.replace(self, **updates) if updates else self

    def _model_specific_fields(self, resolved: dict[str, Any], model_values: dict[str, Any]) -> dict[str, Any]:
        """Further fields a method derives from the model (prefix tuning's kv width); none here.

        ``resolved`` holds this config's fields with the shape fields filled in; ``model_values``
        the model's config as a dict. Returns field -> value updates.
        """
        return {}


def _config_values(model_config: Any) -> dict[str, Any]:
    """A model config as a plain dict (its language part for multimodal configs)."""
    if model_config is None:
        return {}
    if isinstance(model_config, dict):
        values = dict(model_config)
    elif callable(getattr(model_config, "to_dict", None)):
        values = model_config.to_dict()
    else:
        values = dict(vars(model_config))
    text = values.get("text_config")
    return dict(text) if isinstance(text, dict) else values


def config_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """Build the config class that ``data["peft_type"]`` names, through the method registry."""
    from peftplug.manager import get_plugin_manager

    if "peft_type" not in data:
        raise ConfigError(
            "AdapterConfig", "peft_type", None, "a peft_type (the method's name in adapter_config.json) is required"
        )
    method = get_plugin_manager().method_for_peft_type(str(data["peft_type"]))
    return method.config_class.from_dict(data)


def _serialized_fields(config: Any) -> list[dataclasses.Field]:
    """The dataclass fields that adapter_config.json holds (all but run-time objects)."""
    return [f for f in dataclasses.fields(config) if f.metadata.get("serialize", True)]


# ---------------------------------------------------------------------- type checks
def _is_empty(value: Any) -> bool:
    return value is None or value is False or value == {} or value == []


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        items = sorted(value) if isinstance(value, set) else value
        return [_plain(v) for v in items]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _accepts_float(tp: Any) -> bool:
    if tp is float:
        return True
    return typing.get_origin(tp) in _UNIONS and float in typing.get_args(tp)


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNIONS:
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNIONS:
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is type(None):
        return "None"
    if origin in (list, dict):
        inner = ", ".join(_describe(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return getattr(tp, "__name__", str(tp))
