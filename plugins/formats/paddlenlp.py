"""PaddleNLP's adapter format, read and written without Paddle or PaddleNLP.

Files, as ``paddlenlp.peft`` (2.8) writes them, are ``<stem>_config.json`` +
``<stem>_model_state.pdparams`` (+ other files). What a method's files hold is its codec's
business: a method whose PaddleNLP files have fields of their own declares a codec
(``Method(codecs={"paddlenlp": "module:attribute"})``), an object with

- ``stem``: the file names' stem (LoRA: ``"lora"``, prefix tuning: ``"prefix"``);
- ``read(data, weights, source, directory) -> AdapterState``: the canonical state from the
  config file's JSON object, the weights file's arrays (``source`` names that file for errors)
  and the directory (for other files);
- ``write(state) -> (config data, weights, {other file name: bytes})``.

LoRA's codec lives in ``plugins/lora/paddlenlp_codec.py``, prefix tuning's in
``plugins/prefix_tuning/paddlenlp_codec.py``. Every other method (IA3, prompt tuning, P-tuning,
a third party's) gets peftplug's files in the same manner, named by the method, which PaddleNLP
itself cannot read (:mod:`~peftplug.plugins.formats.paddlenlp_methods` documents them).

Read only: paddleformers' safetensors variant, ``peft_model-0000K-of-0000N.safetensors`` +
``peft_model.safetensors.index.json`` (or one ``peft_model.safetensors``) beside the config,
same names and Paddle layout. Sharded tensor-parallel adapters (``tensor_parallel_degree`` > 1,
``*_model_state.tpNN.pdparams``) are refused with a pointer to merging them first. ``.pdparams``
files are read by :mod:`~peftplug.pdparams`, which never runs code from them.
A bfloat16 adapter (PaddleNLP saves bf16 as uint16 with ``"dtype": "bfloat16"``) is widened to
float32 exactly. ``write`` ignores ``safe_serialization``: PaddleNLP's files are pdparams.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from peftplug.config import config_from_dict
from peftplug.errors import AdapterLoadError
from peftplug.files import FileContent
from peftplug.manager import get_plugin_manager
from peftplug.markers import hookimpl
from peftplug.pdparams import pdparams_writer, read_pdparams
from peftplug.plugins.formats import paddlenlp_methods
from peftplug.plugins.formats.safetensors_io import read_safetensors
from peftplug.registration import Format, Method, load_declared
from peftplug.state import AdapterState
from peftplug.weight_index import index_shards

SAFE_INDEX = "peft_model.safetensors.index.json"
SAFE_SINGLE = "peft_model.safetensors"
_SHARD = re.compile(r"_model_state\.tp\d+\.pdparams$")


def codec_of(method: Method) -> Any | None:
    """The method's declared PaddleNLP codec (see the module docstring), None when it has none."""
    spec = method.codecs.get("paddlenlp")
    return load_declared(spec, method.name) if spec else None


def stems() -> dict[str, Method]:
    """File stem -> method, for every registered method: its codec's stem, else its name."""
    result = {}
    for method in get_plugin_manager().methods:
        spec = method.codecs.get("paddlenlp")
        result[codec_of(method).stem if spec else method.name] = method
    return result


def config_name(stem: str) -> str:
    """``lora`` -> ``lora_config.json``."""
    return f"{stem}_config.json"


def weights_name(stem: str) -> str:
    """``lora`` -> ``lora_model_state.pdparams``."""
    return f"{stem}_model_state.pdparams"


class PaddleNLPFormat(Format):
    """PaddleNLP's files (see the module docstring); keys ``llama.layers.0...lora_A``, Paddle layout."""

    name = "paddlenlp"
    description = "PaddleNLP (lora_config.json + lora_model_state.pdparams, prefix_config.json + ...)"
    convention = "paddle"

    def detect(self, directory: Path) -> bool:
        """A ``<method>_config.json`` beside its pdparams (or tensor-parallel shards), or beside
        paddleformers' safetensors."""
        return self._stem(directory, strict=False) is not None

    def files(self, directory: Path) -> list[Path]:
        """Every method's ``<stem>_config.json`` and its weights (whole, or a tensor-parallel
        save's shards), and paddleformers' safetensors, where present."""
        found = [directory / name for name in (SAFE_INDEX, SAFE_SINGLE) if (directory / name).is_file()]
        found += directory.glob("peft_model-*-of-*.safetensors")
        for stem in stems():
            found += [
                directory / name for name in (config_name(stem), weights_name(stem)) if (directory / name).is_file()
            ]
            found += directory.glob(f"{stem}_model_state.tp*.pdparams")
        return found

    @staticmethod
    def shard_file_name(name: str, rank: int, degree: int) -> str:
        """A rank's file of an unmerged tensor-parallel save, named as PaddleNLP names it:
        ``lora_model_state.pdparams`` -> ``lora_model_state.tp01.pdparams`` (any degree)."""
        stem, dot, ext = name.rpartition(".")
        return f"{stem}.tp{rank:02d}.{ext}" if dot else f"{name}.tp{rank:02d}"

    def _stem(self, directory: Path, strict: bool = True) -> str | None:
        found = [stem for stem in stems() if (directory / config_name(stem)).is_file()]
        weights = [stem for stem in found if self._has_weights(directory, stem)]
        if len(weights) > 1 and strict:
            raise AdapterLoadError(
                f"{directory} holds adapters of several methods in PaddleNLP's format "
                f"({', '.join(config_name(s) for s in weights)}); keep one per directory"
            )
        return weights[0] if weights else None

    @staticmethod
    def _has_weights(directory: Path, stem: str) -> bool:
        if (directory / weights_name(stem)).is_file():
            return True
        if (directory / SAFE_INDEX).is_file() or (directory / SAFE_SINGLE).is_file():
            return True
        return any(directory.glob(f"{stem}_model_state.tp*.pdparams"))

    def read(self, directory: Path) -> AdapterState:
        """The adapter's canonical state (HF PEFT names and layout)."""
        stem = self._stem(directory)
        if stem is None:
            present = ", ".join(sorted(p.name for p in directory.iterdir())) if directory.is_dir() else "no directory"
            raise AdapterLoadError(f"no PaddleNLP adapter in {directory} ({present})")
        config_path = directory / config_name(stem)
        try:
            data = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            raise AdapterLoadError(f"{config_path} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise AdapterLoadError(f"{config_path} holds a {type(data).__name__}, not a config object")
        self._refuse_sharded(directory, stem, data)
        raw, source = self._read_weights(directory, stem)
        if data.get("dtype") == "bfloat16":
            raw = {key: _widen_bf16(value) for key, value in raw.items()}
        method = stems()[stem]
        codec = codec_of(method)
        if codec is not None:
            return codec.read(data, raw, source, directory)
        if data.get("peft_type") != method.peft_type:
            raise AdapterLoadError(
                f"{config_path}: peft_type is {data.get('peft_type')!r}, expected {method.peft_type!r}"
            )
        tensors, extra = paddlenlp_methods.tensors_from_paddlenlp(method, raw, source)
        return AdapterState(config_from_dict(data), tensors, extra)

    @staticmethod
    def _refuse_sharded(directory: Path, stem: str, data: dict[str, Any]) -> None:
        shards = sorted(p.name for p in directory.glob(f"{stem}_model_state.tp*.pdparams") if _SHARD.search(p.name))
        degree = data.get("tensor_parallel_degree")
        if (isinstance(degree, int) and degree > 1) or (shards and not (directory / weights_name(stem)).is_file()):
            raise AdapterLoadError(
                f"the adapter in {directory} is sharded for tensor parallelism (tensor_parallel_degree="
                f"{degree} in {config_name(stem)}; files {', '.join(shards) or 'none'}): merge the shards into "
                "one adapter first (`peftplug merge`, or PaddleNLP's save_pretrained(merge_tensor_parallel=True))"
            )

    @staticmethod
    def _read_weights(directory: Path, stem: str) -> tuple[dict[str, np.ndarray], str]:
        path = directory / weights_name(stem)
        if path.is_file():
            return read_pdparams(path), str(path)
        index = directory / SAFE_INDEX
        if index.is_file():
            weight_map, shards = index_shards(index, AdapterLoadError)
            tensors: dict[str, np.ndarray] = {}
            for shard in shards:
                tensors.update(read_safetensors(shard))
            missing = sorted(set(weight_map) - set(tensors))
            if missing:
                raise AdapterLoadError(f"{index} lists tensors no shard holds: {', '.join(missing[:5])}")
            return {key: tensors[key] for key in weight_map}, str(index)
        single = directory / SAFE_SINGLE
        if single.is_file():
            return read_safetensors(single), str(single)
        raise AdapterLoadError(f"no {weights_name(stem)}, {SAFE_INDEX} or {SAFE_SINGLE} in {directory}")

    def write(self, state: AdapterState, *, safe_serialization: bool = True) -> dict[str, FileContent]:
        """``{file name: content}`` of PaddleNLP's files for ``state``."""
        config = state.config
        method = get_plugin_manager().method_for_config(config)
        codec = codec_of(method)
        if codec is not None:
            data, tensors, others = codec.write(state)
            return {
                config_name(codec.stem): _json(data),
                weights_name(codec.stem): pdparams_writer(tensors),
                **others,
            }
        tensors = paddlenlp_methods.tensors_to_paddlenlp(method, state.tensors, state.extra_tensors)
        return {
            config_name(method.name): config.to_json_string().encode(),
            weights_name(method.name): pdparams_writer(tensors),
        }


def _json(data: dict[str, Any]) -> bytes:
    """JSON as PaddleNLP's configs write it: sorted keys, indent 2, no final newline."""
    return json.dumps(data, indent=2, sort_keys=True).encode()


def _widen_bf16(value: np.ndarray) -> np.ndarray:
    """A bfloat16 tensor saved by Paddle (raw uint16) as float32, exactly."""
    if value.dtype != np.uint16:
        return value
    return (value.astype(np.uint32) << 16).view(np.float32)


@hookimpl
def peftplug_register_formats() -> Format:
    """PaddleNLP's format."""
    return PaddleNLPFormat()
