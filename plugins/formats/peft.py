"""HF PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors`` (or ``.bin``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from peftplug.config import CONFIG_NAME, config_from_dict
from peftplug.errors import AdapterLoadError
from peftplug.files import FileContent
from peftplug.markers import hookimpl
from peftplug.plugins.formats.safetensors_io import read_safetensors, safetensors_writer
from peftplug.registration import Format
from peftplug.state import AdapterState

SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"
# peftplug's addition, which HF PEFT never reads: the encoder weights of P-tuning and of prefix
# tuning with projection (AdapterState.extra_tensors), so that training resumes exactly.
ENCODER_SAFETENSORS_NAME = "adapter_model_encoder.safetensors"
ENCODER_BIN_NAME = "adapter_model_encoder.bin"


class PeftFormat(Format):
    """Files exactly as HF PEFT writes them; keys ``base_model.model.<path>.lora_A.weight``.

    Beyond HF PEFT, an adapter whose state has ``extra_tensors`` (a prompt encoder's own
    weights) also gets ``adapter_model_encoder.safetensors`` (``.bin`` without safe
    serialization); HF PEFT ignores that file, and peftplug reads it back when present.
    """

    name = "peft"
    description = "Hugging Face PEFT (adapter_config.json + adapter_model.safetensors)"
    convention = "hf"
    model_card = True

    def detect(self, directory: Path) -> bool:
        """An adapter_config.json beside adapter_model.safetensors or .bin."""
        return (directory / CONFIG_NAME).is_file() and (
            (directory / SAFETENSORS_NAME).is_file() or (directory / BIN_NAME).is_file()
        )

    def files(self, directory: Path) -> list[Path]:
        """The config, the weights (``.safetensors`` or ``.bin``) and a prompt encoder's own
        weights, where present (the model card is not the adapter's: it stays)."""
        names = (CONFIG_NAME, SAFETENSORS_NAME, BIN_NAME, ENCODER_SAFETENSORS_NAME, ENCODER_BIN_NAME)
        return [directory / name for name in names if (directory / name).is_file()]

    def read(self, directory: Path) -> AdapterState:
        """The config and tensors (and a prompt encoder's own weights when their file is there);
        ``.bin`` is read with torch's weights-only unpickler."""
        if not (directory / CONFIG_NAME).is_file():
            raise AdapterLoadError(f"no {CONFIG_NAME} in {directory}")
        config = config_from_dict(_config_json(directory / CONFIG_NAME))
        if (directory / SAFETENSORS_NAME).is_file():
            tensors = read_safetensors(directory / SAFETENSORS_NAME)
        elif (directory / BIN_NAME).is_file():
            tensors = _read_torch_bin(directory / BIN_NAME)
        else:
            raise AdapterLoadError(f"no {SAFETENSORS_NAME} or {BIN_NAME} in {directory}")
        # The encoder file of the same kind as the weights file read above, written with it.
        extra: dict[str, np.ndarray] = {}
        if (directory / SAFETENSORS_NAME).is_file():
            if (directory / ENCODER_SAFETENSORS_NAME).is_file():
                extra = read_safetensors(directory / ENCODER_SAFETENSORS_NAME)
        elif (directory / ENCODER_BIN_NAME).is_file():
            extra = _read_torch_bin(directory / ENCODER_BIN_NAME)
        return AdapterState(config, tensors, extra)

    def write(self, state: AdapterState, *, safe_serialization: bool = True) -> dict[str, FileContent]:
        """adapter_config.json and adapter_model.safetensors (metadata format=pt), or .bin; the
        encoder file too when the state has ``extra_tensors``."""
        files: dict[str, FileContent] = {CONFIG_NAME: state.config.to_json_string().encode()}
        if safe_serialization:
            files[SAFETENSORS_NAME] = safetensors_writer(state.tensors, metadata={"format": "pt"})
            if state.extra_tensors:
                files[ENCODER_SAFETENSORS_NAME] = safetensors_writer(state.extra_tensors, metadata={"format": "pt"})
        else:
            files[BIN_NAME] = _torch_bin_bytes(state.tensors)
            if state.extra_tensors:
                files[ENCODER_BIN_NAME] = _torch_bin_bytes(state.extra_tensors)
        return files


def _config_json(path: Path) -> dict:
    """The JSON object in ``path``; an error naming the file, line and column when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AdapterLoadError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise AdapterLoadError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise AdapterLoadError(f"{path} holds a JSON {type(data).__name__}, not the object of an adapter config")
    return data


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise AdapterLoadError(f"reading {path} needs torch (it is a torch pickle); install peftplug[torch]") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise AdapterLoadError(
            f"{path} cannot be read safely (only tensors and plain containers are allowed): {error}"
        ) from error
    if not isinstance(loaded, dict):
        raise AdapterLoadError(f"{path} holds a {type(loaded).__name__}, not a dict of tensors")
    odd = [
        (key, type(value).__name__)
        for key, value in loaded.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if odd:
        raise AdapterLoadError(f"{path}: {odd[0][0]!r} is a {odd[0][1]}, not a tensor (an adapter holds tensors only)")
    return {
        key: value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy() for key, value in loaded.items()
    }


def _torch_bin_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in tensors.items()}, buffer)
    return buffer.getvalue()


@hookimpl
def peftplug_register_formats() -> Format:
    """HF PEFT's format, the default for both backends."""
    return PeftFormat()
