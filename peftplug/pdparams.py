"""``.pdparams`` files without Paddle: a safe reader and a writer byte-compatible with paddle.save.

``paddle.save(state_dict, path)`` (Paddle 2.x-3.x, dygraph) turns every tensor into a numpy array,
adds an entry ``"StructuredToParameterName@@"`` (key -> Paddle's internal parameter name) and
pickles the plain dict with protocol 4 (protocols 2 and 3 split arrays over 1 GiB into slices
listed under ``"UnpackBigParamInfor@@"``). ``paddle.load`` accepts exactly that; so does this
module.

Reading never runs code from the file: :class:`_ArraysOnlyUnpickler` resolves only the globals
that pickled numpy arrays and plain containers need (``numpy`` array reconstruction, ``dtype``,
scalars, ``collections.OrderedDict``, ``_codecs.encode`` for protocol-2 bytes) and refuses every
other one with an error naming the file and the global, before anything is called. Before
that, :mod:`~peftplug.pickle_scan` checks the stream's shape (string keys,
bounded nesting and size), so no file can make the reader hang or overflow its stack.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

from peftplug.errors import AdapterLoadError
from peftplug.pickle_scan import check_pickle_shape

NAME_TABLE_KEY = "StructuredToParameterName@@"
UNPACK_INFO_KEY = "UnpackBigParamInfor@@"  # sic: Paddle's spelling
PICKLE_PROTOCOL = 4


def _numpy_core(name: str) -> Any:
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    return getattr(core.multiarray, name)


def _numpy_frombuffer() -> Any:
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    return core.numeric._frombuffer


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it (str -> bytes), nothing else."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise pickle.UnpicklingError("_codecs.encode called with non-string arguments")
    return text.encode(encoding)


# (module, name) -> a function returning the object. numpy 1.x pickles say ``numpy.core``,
# numpy 2.x ``numpy._core``: both mean the same functions.
_ALLOWED = {
    **{
        (module, "_reconstruct"): (lambda: _numpy_core("_reconstruct"))
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "scalar"): (lambda: _numpy_core("scalar"))
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(module, "_frombuffer"): _numpy_frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("_codecs", "encode"): lambda: _encode,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers only."""

    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; anything else is refused, naming the file and the global."""
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise RefusedGlobal(
                f"{self._path} is not a plain .pdparams file: it asks for the global {module}.{name}, "
                "and only numpy arrays and plain containers are loaded (nothing in an adapter file may "
                "run code). If you trust the file, convert it with paddle.load / paddle.save first."
            )
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids (torch's zip pickles use them) are not part of a .pdparams file."""
        raise RefusedGlobal(f"{self._path} is not a .pdparams file: it holds a persistent id {pid!r}")


class RefusedGlobal(AdapterLoadError):
    """A pickle asked for something other than arrays and plain containers."""


def read_pdparams(path: Path) -> dict[str, np.ndarray]:
    """The ``name -> array`` dict in a ``.pdparams`` file, as ``paddle.load(return_numpy=True)``
    returns it (name table dropped, split big arrays joined); never runs code from the file."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise AdapterLoadError(f"cannot read {path}: {error}") from error
    with handle:
        check_pickle_shape(handle, path)
        try:
            loaded = _ArraysOnlyUnpickler(handle, path).load()
        except RefusedGlobal:
            raise
        except OSError as error:
            raise AdapterLoadError(f"cannot read {path}: {error}") from error
        except Exception as error:  # truncation and corruption surface as many exception types
            raise AdapterLoadError(
                f"{path} is truncated or corrupted ({os.fstat(handle.fileno()).st_size} bytes; unpickling "
                f"failed with {type(error).__name__}: {error})"
            ) from error
    if not isinstance(loaded, dict):
        raise AdapterLoadError(f"{path} holds a {type(loaded).__name__}, not the dict of tensors a .pdparams has")
    loaded = dict(loaded)
    loaded.pop(NAME_TABLE_KEY, None)
    _join_big_arrays(loaded, path)
    tensors: dict[str, np.ndarray] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise AdapterLoadError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor (numpy array)")
        if value.dtype.hasobject:
            raise AdapterLoadError(f"{path}: tensor {key!r} has dtype object; only numeric tensors are loaded")
        tensors[key] = value
    return tensors


def _join_big_arrays(loaded: dict[str, Any], path: Path) -> None:
    """Undo paddle.save's splitting of arrays over 1 GiB (protocols 2 and 3)."""
    info = loaded.pop(UNPACK_INFO_KEY, None)
    if info is None:
        return
    if not isinstance(info, dict):
        raise AdapterLoadError(f"{path}: {UNPACK_INFO_KEY} is a {type(info).__name__}, not a dict")
    for key, entry in info.items():
        try:
            parts = [loaded.pop(part) for part in entry["slices"]]
            loaded[key] = np.concatenate(parts).reshape(entry["OriginShape"])
        except (KeyError, TypeError, ValueError) as error:
            raise AdapterLoadError(
                f"{path}: tensor {key!r} is split into slices that cannot be joined: {error}"
            ) from error


def pdparams_writer(
    tensors: dict[str, np.ndarray], name_table: dict[str, str] | None = None
) -> Callable[[BinaryIO], None]:
    """A function that writes, to a binary file, the bytes ``paddle.save`` writes for a state
    dict holding ``tensors`` (in that order), pickling straight to the file.

    Arrays that are not C-contiguous (transposed views) are pickled as their C-ordered copies,
    made one at a time while the file is written; the data of the others goes to the file from
    the array's own memory. ``name_table`` is the ``"StructuredToParameterName@@"`` entry
    (key -> Paddle's parameter name); by default each key names itself. Paddle ignores the
    names when it loads a state dict.
    """
    saved: dict[str, Any] = dict(tensors)
    saved[NAME_TABLE_KEY] = dict(name_table) if name_table is not None else {key: key for key in tensors}

    def write(handle: BinaryIO) -> None:
        _ArrayStreamingPickler(handle, protocol=PICKLE_PROTOCOL).dump(saved)

    return write


class _ArrayData:
    """The raw bytes of a C-contiguous array, pickled as the ``bytes`` ``ndarray.__reduce__``
    would make of them, without making them."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


def _standard_library_pickle() -> ModuleType:
    """A private copy of the ``pickle`` module, as the standard library defines it.

    The shared module's pure-Python pickler is patched by other libraries: dill (which
    paddlenlp imports through datasets) puts its own savers in ``pickle._Pickler.dispatch``,
    and they write globals such as ``dill._dill._get_attr`` that no plain reader accepts."""
    spec = importlib.util.spec_from_file_location("_peftplug_stdlib_pickle", pickle.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PICKLE = _standard_library_pickle()


# The pure-Python pickler, because only it lets a type choose its own opcodes: the C pickler
# writes array data through ``ndarray.__reduce__``, which copies it into a ``bytes`` first.
class _ArrayStreamingPickler(_PICKLE._Pickler):  # type: ignore[name-defined]
    """Pickles every numpy array as ``pickle.dump`` pickles its C-ordered copy (the stream is
    byte-identical), writing the data from the array's memory."""

    dispatch = dict(_PICKLE._Pickler.dispatch)

    def reducer_override(self, obj: Any) -> Any:
        """A numeric array reduces as ``ndarray.__reduce__`` reduces its C-ordered copy, with the
        data left in the array; anything else as usual."""
        if not isinstance(obj, np.ndarray) or type(obj) is not np.ndarray or obj.dtype.hasobject:
            return NotImplemented
        array = np.ascontiguousarray(obj)
        # An empty array's reduction gives numpy's own (fresh, so identically memoized) arguments.
        function, arguments, (version, _, dtype, _, _) = np.empty(0, array.dtype).__reduce__()
        return function, arguments, (version, array.shape, dtype, False, _ArrayData(array))

    def _save_array_data(self, obj: _ArrayData) -> None:
        if obj.array.nbytes < self.framer._FRAME_SIZE_TARGET:
            # Small data goes through the ``bytes`` that ``__reduce__`` makes: numpy hands out
            # CPython's shared empty and one-byte ``bytes`` objects, memoized across arrays.
            self.save(obj.array.tobytes())
            return
        data = memoryview(obj.array.reshape(-1).view(np.uint8))
        if data.nbytes > 0xFFFFFFFF:
            header = pickle.BINBYTES8 + struct.pack("<Q", data.nbytes)
        else:
            header = pickle.BINBYTES + struct.pack("<I", data.nbytes)
        self._write_large_bytes(header, data)
        self.memoize(obj)

    dispatch[_ArrayData] = _save_array_data


def pdparams_bytes(tensors: dict[str, np.ndarray], name_table: dict[str, str] | None = None) -> bytes:
    """The bytes ``paddle.save`` writes for a state dict holding ``tensors`` (see :func:`pdparams_writer`)."""
    buffer = io.BytesIO()
    pdparams_writer(tensors, name_table)(buffer)
    return buffer.getvalue()
