"""Reading safetensors files into numpy without a framework, bfloat16 included.

``safetensors.numpy`` refuses bfloat16, which numpy lacks; HF PEFT adapters of bf16 models are
stored that way. This reader widens bf16 to float32 exactly and checks the header as the
safetensors library does (every entry's dtype, shape and offsets; sizes that fit dtype x shape;
the tensors' bytes in order, neither overlapping nor leaving holes, up to the end of the file),
so a truncated or forged file is reported by name and tensor instead of read as garbage.
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
        if header_size > len(data) - 8:
            raise ValueError(f"its header claims {header_size} bytes of a {len(data)}-byte file")
        header = json.loads(data[8 : 8 + header_size].tobytes())
    except (struct.error, ValueError) as error:
        raise AdapterLoadError(f"{path} is not a valid safetensors file: {error}") from error
    body = memoryview(data)[8 + header_size :]
    tensors = {}
    for name, dtype, shape, start, end in _entries(path, header, len(body)):
        raw = body[start:end]
        if dtype == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        tensors[name] = array.reshape(shape)
    return tensors


def _entries(path: Path, header: object, body_size: int) -> list[tuple[str, str, list[int], int, int]]:
    """``(name, dtype, shape, start, end)`` of each tensor, in file order, once the header is
    checked; an :class:`AdapterLoadError` naming the file and the tensor otherwise."""
    if not isinstance(header, dict):
        raise AdapterLoadError(f"{path}: the safetensors header is a {type(header).__name__}, not an object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise AdapterLoadError(f"{where}: its entry is not an object with dtype, shape and data_offsets: {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype != "BF16" and dtype not in _DTYPES:
            raise AdapterLoadError(f"{where} has dtype {dtype!r}, which peftplug cannot read")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise AdapterLoadError(f"{where}: shape {shape!r} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)):
            raise AdapterLoadError(f"{where}: data_offsets {offsets!r} is not [start, end]")
        start, end = offsets
        if end > body_size or not 0 <= start <= end:
            raise AdapterLoadError(f"{path} is truncated: tensor {name!r} needs bytes {start}..{end} of {body_size}")
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        if end - start != itemsize * int(np.prod(shape, dtype=np.int64)):
            raise AdapterLoadError(
                f"{where}: {end - start} bytes do not hold a {dtype} tensor of shape {shape} "
                f"({itemsize * int(np.prod(shape, dtype=np.int64))} bytes)"
            )
        entries.append((name, dtype, shape, start, end))
    entries.sort(key=lambda entry: (entry[3], entry[4]))
    position = 0
    for name, _, _, start, end in entries:
        if start != position:
            what = "overlaps the tensor before it" if start < position else f"leaves bytes {position}..{start} unused"
            raise AdapterLoadError(f"{path}: tensor {name!r} (bytes {start}..{end}) {what}")
        position = end
    if position != body_size:
        raise AdapterLoadError(f"{path}: {body_size - position} bytes after the last tensor belong to none")
    return entries


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
