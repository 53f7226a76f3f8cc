"""LoRA in PaddleNLP's files: ``lora_config.json`` fields and ``lora_model_state`` tensors.

Tensors: PaddleNLP keys are the model's own parameter names, ``<path>.lora_A`` ``[in, r]`` and
``<path>.lora_B`` ``[r, out]``; canonical ones (HF PEFT's) ``base_model.model.<path>.lora_A.weight``
``[r, in]`` and ``...lora_B.weight`` ``[out, r]``: names change and matrices are transposed. A
LoRA layer's bias is ``<path>.bias`` in PaddleNLP (its LoRALinear *is* the Linear) and
``<path>.base_layer.bias`` in the canonical state; other trained parameters (``trainable_modules``
/ ``modules_to_save``, ``trainable_bias="all"``) keep their layout and only gain or lose the
``base_model.model.`` prefix.

Config (PaddleNLP ``LoRAConfig`` <-> peftplug ``LoraConfig``): r, lora_alpha, lora_dropout,
base_model_name_or_path as they are; ``rslora`` <-> ``use_rslora``; ``trainable_bias``
None/"lora"/"all" <-> ``bias`` "none"/"lora_only"/"all"; ``target_modules`` by
:mod:`~peftplug.plugins.formats.paddlenlp_targets`; ``trainable_modules`` (regexes on parameter
names) <-> ``modules_to_save``: on reading, the modules whose parameters the file holds; on
writing, the escaped names of those parameters. ``dtype`` follows the tensors; ``scaling`` is
computed as PaddleNLP computes it; ``task_type``, which PaddleNLP lacks (and skips), is kept when
set. PaddleNLP features peftplug lacks (``pissa``,
``lora_plus_scale`` != 1, ``do_qat``, ``enable_lora_list``, unknown non-empty fields) are
refused naming the field; ``merge_weights``, ``use_quick_lora`` and ``head_dim`` change no
result and are read and dropped (written at PaddleNLP's defaults).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from peftplug.errors import AdapterLoadError, ConfigError
from peftplug.plugins.formats.paddlenlp_targets import (
    exact_names_to_paddlenlp,
    targets_from_paddlenlp,
    targets_to_paddlenlp,
)
from peftplug.plugins.lora.config import LoraConfig
from peftplug.state import AdapterState

KEY_PREFIX = "base_model.model."
BASE_BIAS = ".base_layer.bias"
# lora_config.json as PaddleNLP 2.8.1's LoRAConfig writes it for a plain (not sharded) model.
PADDLENLP_DEFAULTS: dict[str, Any] = {
    "base_model_name_or_path": None,
    "do_qat": False,
    "dtype": None,
    "enable_lora_list": None,
    "head_dim": None,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_plus_scale": 1.0,
    "merge_weights": False,
    "pissa": False,
    "r": 8,
    "rslora": False,
    "target_modules": None,
    "tensor_parallel_degree": -1,
    "trainable_bias": None,
    "trainable_modules": None,
    "use_quick_lora": False,
}
# Fields that change no result of a loaded adapter: read and dropped.
_HARMLESS = {"merge_weights", "use_quick_lora", "head_dim", "dtype", "scaling", "tensor_parallel_degree"}
# peftplug's own fields, written only when set; PaddleNLP's LoRAConfig.from_pretrained skips
# fields it lacks, so they carry a round trip through PaddleNLP's format.
_CARRIED = {"task_type"}
# Fields whose non-default value is a feature peftplug does not implement.
_REFUSED = {
    "pissa": "PiSSA (the base weights it saves against are changed by the method)",
    "lora_plus_scale": "LoRA+ (a separate learning rate for lora_B)",
    "do_qat": "quantisation-aware training",
    "enable_lora_list": "merged QKV LoRA layers (LoRAMergedLinear)",
}
_BIAS_FROM = {None: "none", "lora": "lora_only", "all": "all"}
_BIAS_TO = {value: key for key, value in _BIAS_FROM.items()}


def _fail(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError("PaddleNLP LoRAConfig (lora_config.json)", field, value, allowed)


def _as_list(value: Any) -> list[Any]:
    """``value`` as a list when it is one (or a tuple); else a one-item list holding it."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def config_from_paddlenlp(data: dict[str, Any], tensors: dict[str, np.ndarray]) -> LoraConfig:
    """peftplug's LoraConfig for a PaddleNLP ``lora_config.json`` whose weights are ``tensors``
    (canonical names; used to name the modules of ``trainable_modules``)."""
    for field, value in data.items():
        if field in _REFUSED:
            if value != PADDLENLP_DEFAULTS[field] and value is not None:
                raise _fail(
                    field,
                    value,
                    f"peftplug does not implement {_REFUSED[field]}; only {PADDLENLP_DEFAULTS[field]!r} is accepted",
                )
        elif field not in PADDLENLP_DEFAULTS and field not in _HARMLESS | _CARRIED:
            if value not in (None, False, [], {}, ""):
                raise _fail(field, value, "a field peftplug does not know; only an empty/false value is accepted")
    targets = data.get("target_modules")
    if not targets or not (isinstance(targets, str) or all(isinstance(t, str) for t in _as_list(targets))):
        raise _fail(
            "target_modules", targets, "regexes naming the adapted layers (PaddleNLP adds no LoRA layer without them)"
        )
    rank = data.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise _fail("r", rank, "a positive integer, the rank PaddleNLP writes with every LoRA adapter")
    trainable_bias = data.get("trainable_bias")
    if trainable_bias not in _BIAS_FROM:
        raise _fail("trainable_bias", trainable_bias, "None, 'lora' or 'all'")
    modules_to_save = None
    if data.get("trainable_modules"):
        modules = sorted(
            {
                key[len(KEY_PREFIX) :].rsplit(".", 1)[0]
                for key in tensors
                if not _is_lora(key) and not _is_bias_of(key, trainable_bias)
            }
        )
        modules_to_save = modules or None
    return LoraConfig(
        r=rank,
        lora_alpha=data.get("lora_alpha", PADDLENLP_DEFAULTS["lora_alpha"]),
        lora_dropout=float(data.get("lora_dropout", 0.0)),
        target_modules=targets_from_paddlenlp(targets),
        bias=_BIAS_FROM[trainable_bias],
        use_rslora=bool(data.get("rslora", False)),
        modules_to_save=modules_to_save,
        base_model_name_or_path=data.get("base_model_name_or_path"),
        task_type=data.get("task_type"),
        inference_mode=True,
    )


def config_to_paddlenlp(
    config: LoraConfig, tensors: dict[str, np.ndarray], paddle_tensors: dict[str, np.ndarray]
) -> dict[str, Any]:
    """PaddleNLP's ``lora_config.json`` content for ``config`` with canonical ``tensors``
    (``paddle_tensors``: the same, as :func:`tensors_to_paddlenlp` wrote them)."""
    for field in ("rank_pattern", "alpha_pattern"):
        if getattr(config, field):
            raise ConfigError(
                "LoraConfig",
                field,
                getattr(config, field),
                "empty to save in PaddleNLP's format (PaddleNLP has one r and one lora_alpha for every layer)",
            )
    lora_modules = sorted({key[len(KEY_PREFIX) :].rsplit(".", 2)[0] for key in tensors if _is_lora(key)})
    if not lora_modules:
        raise AdapterLoadError("the LoRA adapter holds no lora_A/lora_B tensors; there is nothing to save")
    if isinstance(config.target_modules, list) and not config.exclude_modules and config.layers_to_transform is None:
        targets = targets_to_paddlenlp(config.target_modules)
    elif (
        isinstance(config.target_modules, str) and config.target_modules != "all-linear" and not config.exclude_modules
    ):
        targets = targets_to_paddlenlp(config.target_modules)
    else:
        # all-linear, family defaults, exclusions or layer filters: name the adapted layers.
        targets = exact_names_to_paddlenlp(lora_modules)
    trainable_bias = _BIAS_TO[config.bias]
    bias_keys = {_paddle_key(key) for key in tensors if _is_bias_of(key, trainable_bias)}
    trainable = [re.escape(key) for key in paddle_tensors if not _is_paddle_lora(key) and key not in bias_keys]
    lora_dtypes = {paddle_tensors[key].dtype.name for key in paddle_tensors if _is_paddle_lora(key)}
    data = dict(PADDLENLP_DEFAULTS)
    data.update(
        base_model_name_or_path=config.base_model_name_or_path,
        dtype=lora_dtypes.pop() if len(lora_dtypes) == 1 else "float32",
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        r=config.r,
        rslora=config.use_rslora,
        target_modules=targets,
        trainable_bias=trainable_bias,
        trainable_modules=trainable or None,
    )
    data.update({field: getattr(config, field) for field in sorted(_CARRIED) if getattr(config, field, None)})
    # PaddleNLP's LoRAConfig.scaling, exactly.
    data["scaling"] = config.lora_alpha / math.sqrt(config.r) if config.use_rslora else config.lora_alpha / config.r
    return data


def tensors_from_paddlenlp(tensors: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """Canonical LoRA tensors (HF PEFT names and layout) from PaddleNLP's."""
    lora_modules = {key.rsplit(".", 1)[0] for key in tensors if _is_paddle_lora(key)}
    result = {}
    for key, value in tensors.items():
        if _is_paddle_lora(key):
            if value.ndim != 2:
                raise AdapterLoadError(
                    f"{path}: tensor {key!r} has shape {tuple(value.shape)}; peftplug reads LoRA of linear "
                    "layers only (2-D lora_A [in, r] / lora_B [r, out]), not of convolutions"
                )
            result[f"{KEY_PREFIX}{key}.weight"] = value.T  # a view: writers copy it as they stream
        elif key.endswith(".bias") and key[: -len(".bias")] in lora_modules:
            result[KEY_PREFIX + key[: -len(".bias")] + BASE_BIAS] = value
        else:
            result[KEY_PREFIX + key] = value
    return result


def tensors_to_paddlenlp(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PaddleNLP's LoRA tensors (the model's parameter names, Paddle layout) from canonical ones."""
    result = {}
    for key, value in tensors.items():
        name = key.removeprefix(KEY_PREFIX)
        if re.search(r"\.lora_(embedding_[AB]|magnitude_vector)\b", name):
            raise AdapterLoadError(
                f"tensor {key!r}: PaddleNLP has no LoRA for embeddings and no DoRA; this adapter cannot "
                "be saved in PaddleNLP's format"
            )
        if _is_lora(key):
            if value.ndim != 2:
                raise AdapterLoadError(
                    f"tensor {key!r} has shape {tuple(value.shape)}; PaddleNLP's LoRA needs 2-D matrices"
                )
            result[name[: -len(".weight")]] = value.T  # a view: the pdparams writer copies it as it streams
        else:
            result[_paddle_key(key)] = value
    return result


def _paddle_key(key: str) -> str:
    name = key.removeprefix(KEY_PREFIX)
    return name[: -len(BASE_BIAS)] + ".bias" if name.endswith(BASE_BIAS) else name


def _is_lora(key: str) -> bool:
    return key.endswith((".lora_A.weight", ".lora_B.weight"))


def _is_paddle_lora(key: str) -> bool:
    return key.endswith((".lora_A", ".lora_B"))


def _is_bias_of(key: str, trainable_bias: str | None) -> bool:
    """True when ``key`` (canonical) is a bias saved because of ``trainable_bias``."""
    if trainable_bias == "all":
        return key.endswith(".bias")
    if trainable_bias == "lora":
        return key.endswith(BASE_BIAS)
    return False


class LoraPaddleNLPCodec:
    """LoRA in PaddleNLP's own files (``lora_config.json`` + ``lora_model_state.pdparams``): the
    codec the PaddleNLP format plugin uses for this method (its interface is documented there)."""

    stem = "lora"

    def read(self, data: dict[str, Any], weights: dict[str, np.ndarray], source: str, directory: Path) -> AdapterState:
        """The canonical state from the config file's ``data`` and the weights file's arrays."""
        tensors = tensors_from_paddlenlp(weights, source)
        return AdapterState(config_from_paddlenlp(data, tensors), tensors)

    def write(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        """``(lora_config.json's data, the weights, no other file)`` for a canonical state."""
        tensors = tensors_to_paddlenlp(state.tensors)
        return config_to_paddlenlp(state.config, state.tensors, tensors), tensors, {}


CODEC = LoraPaddleNLPCodec()
