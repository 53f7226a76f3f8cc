"""Reading safetensors files into numpy without a framework, bfloat16 included.

``safetensors.numpy`` refuses bfloat16, which numpy lacks; HF PEFT adapters of bf16 models are
stored that way. This reader widens bf16 to float32 exactly and checks the header's offsets, so
a truncated file is reported by name instead of read as garbage.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from peftplug.errors import AdapterLoadError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in ``path`` as a numpy array (BF16 widened to float32).

    The file is read once into one writable buffer and the arrays are views of it (no second
    copy); they keep the buffer alive.
    """
    data = np.fromfile(path, dtype=np.uint8)
    try:
        (header_size,) = struct.unpack("<Q", data[:8].tobytes())
        header = json.loads(data[8 : 8 + header_size].tobytes())
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
            array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise AdapterLoadError(f"{path}: tensor {name!r} has dtype {dtype}, which peftplug cannot read")
        tensors[name] = array.reshape(info["shape"])
    return tensors


_NAMES = {np.dtype(dtype).newbyteorder("<"): name for name, dtype in _DTYPES.items()}
# safetensors writes tensors by this dtype rank, highest first (its Rust Dtype enum order), then by name
_WRITE_RANK = {
    name: rank
    for rank, name in enumerate(
        ("BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64")
    )
}


def safetensors_writer(
    tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> Callable[[BinaryIO], None]:
    """A function that writes ``tensors`` as a safetensors file to a binary file, streaming.

    The bytes are those ``safetensors.numpy.save`` gives (tensors ordered by dtype, then name;
    header padded to 8 bytes), but each array goes to the file straight from its memory instead
    of through one big in-memory copy of the whole file; an array that is not C-contiguous (a
    transposed view) is copied just before it is written, so that the disk takes the earlier
    ones meanwhile.
    """
    arrays = {name: np.asarray(value) for name, value in tensors.items()}
    for name, array in arrays.items():
        if array.dtype.newbyteorder("<") not in _NAMES:
            raise ValueError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store")
    order = sorted(arrays, key=lambda name: (-_WRITE_RANK[_NAMES[arrays[name].dtype.newbyteorder("<")]], name))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": _NAMES[array.dtype.newbyteorder("<")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    def write(handle: BinaryIO) -> None:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name in order:
            array = np.asarray(arrays[name], dtype=arrays[name].dtype.newbyteorder("<"), order="C")
            if array.nbytes:
                handle.write(memoryview(array.reshape(-1)).cast("B"))

    return write
