"""Tensor-parallel shard files: their names, their index, and joining them without a framework.

A model sharded by tensor parallelism over ``degree`` ranks can save its adapter unmerged: each
rank writes its own piece of every tensor. The files are the format's usual files with the
tensor files renamed per rank, beside the format's config (written once) and an index::

    adapter_config.json
    adapter_model.tp00-of-02.safetensors      rank 0's pieces, HF PEFT keys and layout
    adapter_model.tp01-of-02.safetensors
    tensor_parallel.json                      {"tensor_parallel_degree": 2, "format": "peft",
                                               "split_axes": {key: axis or null}}

PaddleNLP's unmerged saves (``lora_model_state.tp00.pdparams``, ``tp01``, ... beside
``lora_config.json`` saying ``tensor_parallel_degree``; the paddlenlp format writes its shards so,
plus the index) are recognised by the same name pattern; without an index their split axes are
given by the caller or inferred (:func:`infer_split_axes`). Pieces are read through the
registered format (a view of one rank's files under their usual names), so every axis here is
an axis of the HF PEFT layout: column-parallel LoRA splits ``lora_B`` ``[out, r]`` on axis 0,
row-parallel splits ``lora_A`` ``[r, in]`` on axis 1 (PaddleNLP's axis 1 of B and axis 0 of A in
Paddle's transposed layout).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from peftplug.errors import AdapterLoadError, PeftplugError
from peftplug.manager import get_plugin_manager
from peftplug.state import AdapterState
from peftplug.tensor_roles import TensorRole, roles_by_suffix, split_suffix

INDEX_NAME = "tensor_parallel.json"
_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.tp(?P<rank>\d{2,})(?:-of-(?P<degree>\d{2,}))?(?P<ext>\.[A-Za-z0-9]+)$")
# Leaf module names of row-parallel linears in the families PaddleNLP shards (their output is
# the residual stream); every other target is column-parallel. Used only to resolve a module
# whose pieces are equal on every rank (LoRA's untrained, all-zero B).
ROW_PARALLEL_NAMES = ("o_proj", "down_proj", "dense", "dense_4h_to_h", "out_proj", "fc2", "wo", "c_proj", "w2")

SplitAxes = Mapping[str, int | None] | Callable[[str], int | None]


class TensorParallelError(PeftplugError):
    """Tensor-parallel shards that do not fit together, or a rank that failed during a save."""


def shard_file_name(name: str, rank: int, degree: int) -> str:
    """``adapter_model.safetensors`` -> ``adapter_model.tp00-of-02.safetensors`` for rank 0 of 2."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    width = max(2, len(str(degree - 1)))
    return f"{stem}.tp{rank:0{width}d}-of-{degree:0{width}d}" + (f".{ext}" if ext else "")


def shard_namer(fmt: object) -> Callable[[str, int, int], str]:
    """How format ``fmt`` names a rank's file: its own ``shard_file_name(name, rank, degree)``
    method when it has one (PaddleNLP's ``lora_model_state.tp00.pdparams``), else
    :func:`shard_file_name`. Any name matching ``<stem>.tpNN[-of-DD].<ext>`` is found again."""
    return getattr(fmt, "shard_file_name", None) or shard_file_name


def config_of_degree(content: object, degree: int) -> object:
    """A JSON config's content with its ``tensor_parallel_degree`` field (PaddleNLP's configs
    have one) set to ``degree``; any other content as it is."""
    if not isinstance(content, bytes):
        return content
    try:
        data = json.loads(content)
    except ValueError:
        return content
    if not isinstance(data, dict) or "tensor_parallel_degree" not in data:
        return content
    return json.dumps({**data, "tensor_parallel_degree": degree}, indent=2, sort_keys=True).encode()


def split_array(array: np.ndarray, axis: int | None, rank: int, degree: int) -> np.ndarray:
    """Rank ``rank``'s piece of ``array`` (all of it when ``axis`` is None), cut as torch's
    ``chunk`` and Paddle's ``split`` cut: equal pieces, the last one smaller when uneven."""
    if axis is None:
        return array
    size = array.shape[axis]
    step = -(-size // degree)
    return np.take(array, range(min(rank * step, size), min((rank + 1) * step, size)), axis=axis)


def join_arrays(pieces: list[np.ndarray], axis: int | None, key: str) -> np.ndarray:
    """One tensor from its per-rank ``pieces`` (rank order): concatenated on ``axis``, or, when
    ``axis`` is None, the piece every rank holds whole (an error names ``key`` if they differ
    in shape)."""
    if axis is None:
        shapes = {piece.shape for piece in pieces}
        if len(shapes) != 1:
            raise TensorParallelError(
                f"tensor {key!r} is recorded as whole on every rank, but the ranks hold shapes {sorted(shapes)}"
            )
        return pieces[0]
    ndim = pieces[0].ndim
    if not -ndim <= axis < ndim:
        raise TensorParallelError(f"tensor {key!r} has {ndim} axes; it cannot be split on axis {axis}")
    others = {tuple(np.delete(piece.shape, axis % ndim)) for piece in pieces}
    if len(others) != 1:
        raise TensorParallelError(
            f"the pieces of tensor {key!r} differ off their split axis {axis}: "
            f"{[list(piece.shape) for piece in pieces]}"
        )
    return np.concatenate(pieces, axis=axis)


def index_json(degree: int, format: str, split_axes: Mapping[str, int | None]) -> bytes:
    """The content of ``tensor_parallel.json``."""
    index = {"tensor_parallel_degree": degree, "format": format, "split_axes": dict(sorted(split_axes.items()))}
    return (json.dumps(index, indent=2) + "\n").encode()


@dataclass
class ShardSet:
    """The per-rank shard files found in a directory.

    ``files`` maps each rank to ``{name on disk: the format's usual name}``; ``shared`` lists the
    files every rank reads (the config); ``split_axes`` is the index's, or None without one.
    """

    directory: Path
    degree: int
    files: dict[int, dict[str, str]]
    shared: list[str]
    format: str | None = None
    split_axes: dict[str, int | None] | None = None

    @contextmanager
    def rank_view(self, rank: int) -> Iterator[Path]:
        """A temporary directory holding rank ``rank``'s files under their usual names, next to
        the shared ones: what the format's reader expects to find. A peftplug error raised while
        it is open names the shard directory and the files on disk, never the temporary one."""
        with tempfile.TemporaryDirectory(prefix=f"peftplug-tp{rank:02d}-") as tmp:
            view = Path(tmp)
            for name in self.shared:
                _link_or_copy(self.directory / name, view / name, as_unsharded=True)
            for on_disk, usual in self.files[rank].items():
                _link_or_copy(self.directory / on_disk, view / usual)
            try:
                yield view
            except PeftplugError as error:
                message = str(error).replace(str(view), str(self.directory))
                on_disk = ", ".join(sorted([*self.shared, *self.files[rank]]))
                raise TensorParallelError(
                    f"the tensor-parallel shards in {str(self.directory)!r}, read as rank {rank}'s files "
                    f"({on_disk}) under their usual names: {message}"
                ) from error


def shard_files(directory: str | Path) -> list[Path]:
    """The shard files (``*.tpNN[-of-DD].*``) and the index in ``directory``, if any."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _SHARD_NAME.match(p.name) or p.name == INDEX_NAME)


def find_shard_set(directory: str | Path) -> ShardSet | None:
    """The shard files in ``directory``, or None when it holds none.

    Shard files are named ``<stem>.tpNN[-of-DD].<ext>``. Every rank from 0 to degree-1 must be
    there, each with the same files; a gap, or names that disagree on the degree, is an error
    naming the directory and what is missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    files: dict[int, dict[str, str]] = {}
    stated: set[int] = set()
    shared = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        match = _SHARD_NAME.match(path.name)
        if match is None:
            if path.name != INDEX_NAME:
                shared.append(path.name)
            continue
        rank = int(match["rank"])
        if match["degree"]:
            stated.add(int(match["degree"]))
        files.setdefault(rank, {})[path.name] = match["stem"] + match["ext"]
    if not files:
        return None
    index = _read_index(directory)
    if index is not None:
        stated.add(int(index["tensor_parallel_degree"]))
    degree = stated.pop() if len(stated) == 1 else max(files) + 1
    if stated or max(files) >= degree:
        raise TensorParallelError(
            f"the shard files in {str(directory)!r} disagree on the tensor-parallel degree: "
            f"names and index say {sorted(stated | {degree})}, files exist for ranks {sorted(files)}"
        )
    missing = [rank for rank in range(degree) if rank not in files]
    if missing:
        raise TensorParallelError(
            f"{str(directory)!r} has shard files for ranks {sorted(files)} but none for rank(s) {missing}"
        )
    layouts = {rank: sorted(names.values()) for rank, names in files.items()}
    if any(layout != layouts[0] for layout in layouts.values()):
        raise TensorParallelError(f"the ranks' shard files in {str(directory)!r} differ: {layouts}")
    return ShardSet(
        directory,
        degree,
        files,
        shared,
        format=index.get("format") if index else None,
        split_axes=dict(index["split_axes"]) if index else None,
    )


def shards_format(shard_set: ShardSet, format: str | None = None, manager: Any = None) -> str:
    """The format of ``shard_set``'s files: ``format`` when given, else the index's, else the one
    that recognises rank 0's files under their usual names."""
    from peftplug.adapter_io import detect_format

    if format is not None or shard_set.format is not None:
        return format or shard_set.format
    with shard_set.rank_view(0) as view:
        return detect_format(view, manager).name


def read_rank(shard_set: ShardSet, rank: int, format: str | None = None) -> AdapterState:
    """Rank ``rank``'s pieces as an :class:`AdapterState`, read by the registered format."""
    from peftplug.adapter_io import read_adapter

    with shard_set.rank_view(rank) as view:
        return read_adapter(view, format or shard_set.format)


def infer_split_axes(
    pieces: Mapping[str, list[np.ndarray]], roles: Mapping[str, TensorRole] | None = None
) -> dict[str, int | None]:
    """Each tensor's split axis (HF PEFT layout) for shards without an index (PaddleNLP's).

    ``roles`` are the method's declared tensor roles (:func:`~peftplug.tensor_roles.roles_by_suffix`).
    A module is column-parallel when a tensor of it along the output (``"out"``) differs between
    ranks, row-parallel when one along the input (``"in"``) does; its tensors are then split on
    that axis (LoRA: ``lora_B`` ``[out, r]`` on axis 0, or ``lora_A`` ``[r, in]`` on axis 1) and
    whole otherwise. When every piece of a module is equal on every rank (an untrained, all-zero
    ``lora_B``), the module's leaf name decides (:data:`ROW_PARALLEL_NAMES` are row-parallel). A
    tensor that differs between ranks with no declared axis to split is an error naming it: pass
    ``split_axes`` for it.
    """
    roles = roles or {}
    modules: dict[str, dict[str, tuple[tuple[str, ...], bool]]] = {}
    axes: dict[str, int | None] = {}
    for key, arrays in pieces.items():
        module, role = split_suffix(key, roles)
        same = all(a.shape == arrays[0].shape and np.array_equal(a, arrays[0]) for a in arrays[1:])
        layout = role.layout(arrays[0].shape) if role is not None else ()
        if not same and not {"out", "in"} & set(layout):
            raise TensorParallelError(
                f"tensor {key!r} differs between ranks and has no declared axis along a layer's input or output; "
                "give its split axis in split_axes"
            )
        if role is None:
            axes[key] = None
            continue
        modules.setdefault(module, {})[key] = (layout, same)
    for module, tensors in modules.items():
        split_out = any(not same and "out" in layout for layout, same in tensors.values())
        split_in = any(not same and "in" in layout for layout, same in tensors.values())
        if split_out and split_in:
            raise TensorParallelError(
                f"module {module!r}: its shards differ along both the output and the input; give split_axes"
            )
        if not split_out and not split_in:
            split_in = module.rsplit(".", 1)[-1] in ROW_PARALLEL_NAMES
        axis_name = "in" if split_in else "out"
        for key, (layout, _) in tensors.items():
            axes[key] = layout.index(axis_name) if axis_name in layout else None
    return axes


def join_shards(shard_set: ShardSet, format: str | None = None, split_axes: SplitAxes | None = None) -> AdapterState:
    """One :class:`AdapterState` from every rank's pieces.

    Split axes come from ``split_axes`` (a mapping or a function of the key) when given, else
    from the set's index, else from :func:`infer_split_axes`. The config is rank 0's, with any
    ``tensor_parallel_degree`` field set to -1 (merged), as PaddleNLP's merged save writes it.
    """
    states = [read_rank(shard_set, rank, format) for rank in range(shard_set.degree)]
    keys = list(states[0].tensors)
    for rank, state in enumerate(states[1:], start=1):
        if sorted(state.tensors) != sorted(keys):
            extra = sorted(set(state.tensors) ^ set(keys))
            raise TensorParallelError(f"rank {rank}'s shard holds other tensors than rank 0's: {extra[:5]}")
    pieces = {key: [state.tensors[key] for state in states] for key in keys}
    if callable(split_axes):
        axes = {key: split_axes(key) for key in keys}
    elif split_axes is not None:
        axes = {key: split_axes.get(key) for key in keys}
    elif shard_set.split_axes is not None:
        unknown = sorted(set(keys) - set(shard_set.split_axes))
        if unknown:
            raise TensorParallelError(
                f"{INDEX_NAME} in {str(shard_set.directory)!r} has no split axis for {unknown[:5]}"
            )
        axes = shard_set.split_axes
    else:
        method = get_plugin_manager().method_for_config(states[0].config)
        axes = infer_split_axes(pieces, roles_by_suffix(method.tensors))
    tensors = {key: join_arrays(pieces[key], axes[key], key) for key in keys}
    extra = {key: states[0].extra_tensors[key] for key in states[0].extra_tensors}
    config = states[0].config
    if getattr(config, "tensor_parallel_degree", None) not in (None, -1):
        config = dataclasses.replace(config, tensor_parallel_degree=-1)
    return AdapterState(config, tensors, extra)


def join_shard_directory(
    src: str | Path,
    dst: str | Path,
    format: str | None = None,
    split_axes: SplitAxes | None = None,
    to: str | None = None,
) -> list[Path]:
    """Join the per-rank shard files in ``src`` into one ordinary adapter written to ``dst``.

    ``format`` names the shards' format (the index's, else detected from the files); ``to`` the
    format to write (default: the same). The module tree stays the shards' own, the tree of the
    model that wrote them (``peftplug convert`` moves it). No distributed runtime and no
    framework is needed. Returns the files written (atomically).
    """
    from peftplug.adapter_io import write_adapter

    shard_set = find_shard_set(src)
    if shard_set is None:
        raise AdapterLoadError(f"{str(src)!r} holds no tensor-parallel shard files (named *.tpNN.* or *.tpNN-of-DD.*)")
    format = shards_format(shard_set, format)
    state = join_shards(shard_set, format, split_axes)
    return write_adapter(state, dst, to or format)


def write_shard_directory(
    state: AdapterState, dst: str | Path, degree: int, split_axes: SplitAxes, format: str = "peft"
) -> list[Path]:
    """Split ``state`` for ``degree`` ranks and write the shard files and index into ``dst``
    (the reverse of :func:`join_shard_directory`, e.g. to hand an adapter to a sharded job that
    loads per-rank files; in the paddlenlp format, PaddleNLP's own per-rank names and config).
    ``split_axes`` gives each key's axis (HF PEFT layout) or None."""
    from peftplug.files import write_files_atomically
    from peftplug.manager import get_plugin_manager

    fmt = get_plugin_manager().formats.get(format)
    axes = {key: split_axes(key) if callable(split_axes) else split_axes.get(key) for key in state.tensors}
    files: dict[str, bytes] = {}
    for rank in range(degree):
        tensors = {key: split_array(value, axes[key], rank, degree) for key, value in state.tensors.items()}
        piece = AdapterState(state.config, tensors, state.extra_tensors)
        for name, content in fmt.write(piece).items():
            if name.endswith(".json"):
                files.setdefault(name, config_of_degree(content, degree))
            else:
                files[shard_namer(fmt)(name, rank, degree)] = content
    files[INDEX_NAME] = index_json(degree, format, axes)
    return write_files_atomically(Path(dst), files)


def _read_index(directory: Path) -> dict | None:
    path = directory / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
        int(index["tensor_parallel_degree"])
        dict(index["split_axes"])
    except (ValueError, KeyError, TypeError) as error:
        raise TensorParallelError(f"{path} is not a valid tensor-parallel index: {error}") from error
    return index


def _link_or_copy(source: Path, target: Path, as_unsharded: bool = False) -> None:
    """Link ``source`` at ``target``; with ``as_unsharded``, a JSON config recording a
    ``tensor_parallel_degree`` above 1 (PaddleNLP's unmerged save) is copied with -1 instead, so
    the format reads one rank's files as an ordinary adapter instead of refusing them."""
    if as_unsharded and source.suffix == ".json":
        try:
            data = json.loads(source.read_text())
        except ValueError:
            data = None
        degree = data.get("tensor_parallel_degree") if isinstance(data, dict) else None
        if isinstance(degree, int) and degree > 1:
            target.write_text(json.dumps({**data, "tensor_parallel_degree": -1}))
            return
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)
