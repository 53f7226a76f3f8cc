"""Reading safetensors files into numpy without a framework, bfloat16 included.

``safetensors.numpy`` refuses bfloat16, which numpy lacks; HF PEFT adapters of bf16 models are
stored that way. This reader widens bf16 to float32 exactly and checks the header's offsets, so
a truncated file is reported by name instead of read as garbage.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from peftplug.errors import AdapterLoadError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in ``path`` as a numpy array (BF16 widened to float32)."""
    data = path.read_bytes()
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_size])
    except (struct.error, ValueError) as error:
        raise AdapterLoadError(f"{path} is not a valid safetensors file: {error}") from error
    body = memoryview(data)[8 + header_size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if end > len(body) or start > end:
            raise AdapterLoadError(f"{path} is truncated: tensor {name!r} needs bytes {start}..{end} of {len(body)}")
        dtype = info["dtype"]
        raw = body[start:end]
        if dtype == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _DTYPES:
            array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).copy()
        else:
            raise AdapterLoadError(f"{path}: tensor {name!r} has dtype {dtype}, which peftplug cannot read")
        tensors[name] = array.reshape(info["shape"])
    return tensors
