"""Saving and loading the adapters of a tensor-parallel model, on every rank at once.

Every rank calls ``save_pretrained`` (as with PaddleNLP and torch's distributed checkpoints).
A save runs in steps; after each one the ranks agree through the distributed runtime's
key-value store, with a timeout, whether every rank succeeded (:func:`agree`):

1. ``collect``: each rank takes its local pieces of every adapter tensor (no communication);
2. merged: one gather brings them to rank 0, which joins them (:mod:`peftplug.distributed.tp_shards`) and
   stages one ordinary adapter; unmerged: each rank stages its own shard file;
3. ``staged``: only when every rank has staged (merged: rank 0) are the files renamed into place;
4. ``committed``: every rank returns once the files are in place, so any rank may load them.

A rank that raises posts its error and re-raises; the others then fail with an error naming that
rank and its message, and nothing is renamed into place. A rank that never arrives makes the
others fail after ``PEFTPLUG_TP_TIMEOUT`` seconds (default 300), naming it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from peftplug.distributed.tp_shards import (
    INDEX_NAME,
    ShardSet,
    TensorParallelError,
    config_of_degree,
    find_shard_set,
    index_json,
    join_arrays,
    join_shards,
    shard_files,
    shard_namer,
)
from peftplug.files import write_files_atomically
from peftplug.interop.cross_framework import state_for_format
from peftplug.state import AdapterState

if TYPE_CHECKING:
    from peftplug.backend import TensorParallelGroup
    from peftplug.model.peft_model import PeftModel

TIMEOUT_ENV = "PEFTPLUG_TP_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
Pieces = dict[str, tuple[np.ndarray, "int | None"]]
T = TypeVar("T")
_save_ids = itertools.count()


def timeout_seconds() -> float:
    """How long a rank waits for the others at each step of a save (``PEFTPLUG_TP_TIMEOUT``)."""
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))


def group_of(peft_model: PeftModel) -> TensorParallelGroup | None:
    """The tensor-parallel group of ``peft_model``, None when it is not sharded or its backend
    has no :meth:`~peftplug.backend.BackendOps.tensor_parallel` (an optional operation)."""
    tensor_parallel = getattr(peft_model._peft_ops, "tensor_parallel", None)
    return tensor_parallel(peft_model) if tensor_parallel is not None else None


def agree(group: TensorParallelGroup, key: str, error: BaseException | None, timeout: float) -> None:
    """Post this rank's outcome of step ``key`` and wait for every rank's.

    A rank that failed re-raises its own ``error`` at once; the others raise
    :class:`~peftplug.distributed.tp_shards.TensorParallelError` naming the failed rank(s) and messages, or
    the ranks that posted nothing within ``timeout`` seconds.
    """
    group.post(f"{key}/{group.rank}", "ok" if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    keys = [f"{key}/{rank}" for rank in range(group.degree)]
    posted = group.read(keys, timeout)
    failed = [f"rank {rank}: {posted[k]}" for rank, k in enumerate(keys) if posted.get(k, "ok") != "ok"]
    step = key.rsplit("/", 1)[-1]
    if failed:
        raise TensorParallelError(
            f"save_pretrained failed on another rank at step {step!r} ({'; '.join(failed)}); "
            "nothing was written in its place"
        )
    missing = [rank for rank, k in enumerate(keys) if k not in posted]
    if missing:
        raise TensorParallelError(
            f"rank(s) {missing} did not reach step {step!r} of save_pretrained within {timeout:g} s "
            f"(set {TIMEOUT_ENV} to wait longer); nothing was written"
        )


def _step(group: TensorParallelGroup, key: str, timeout: float, work: Callable[[], T]) -> T:
    """Run ``work`` on this rank, then :func:`agree` on its outcome."""
    try:
        result = work()
    except Exception as error:  # posted for the other ranks, then re-raised by agree
        agree(group, key, error, timeout)
        raise
    agree(group, key, None, timeout)
    return result


def local_pieces(peft_model: PeftModel, adapter_name: str) -> tuple[AdapterState, dict[str, int | None]]:
    """This rank's pieces of adapter ``adapter_name`` (as an :class:`AdapterState` of local
    arrays) and each key's split axis. Never communicates."""
    from peftplug.model.peft_model import ENCODER_KEY_PREFIX, KEY_PREFIX, PROMPT_KEY_PREFIX

    ops = peft_model._peft_ops
    group = group_of(peft_model)
    config = peft_model.peft_config[adapter_name]
    pieces: Pieces = {}
    extra: dict[str, np.ndarray] = {}
    prefix = KEY_PREFIX
    if config.is_prompt_learning:
        prefix = PROMPT_KEY_PREFIX
        encoder = ops.prompt_encoders(peft_model)[adapter_name]
        pieces.update({key: (value, None) for key, value in encoder.export_prompt().items()})
        extra = {ENCODER_KEY_PREFIX + key: value for key, value in encoder.export_encoder().items()}
    for name, layer in peft_model._adapter_layers():
        if adapter_name in layer.adapter_names:
            for suffix, piece in layer.export_adapter_shard(adapter_name).items():
                pieces[f"{prefix}{name}.{suffix}"] = piece
    for name, parameter in peft_model._trainable_biases(config):
        pieces[prefix + name] = group.local_piece(parameter)
    state = AdapterState(
        dataclasses.replace(config, inference_mode=True), {k: v for k, (v, _) in pieces.items()}, extra
    )
    return state, {key: axis for key, (_, axis) in pieces.items()}


def save_merged(
    peft_model: PeftModel,
    group: TensorParallelGroup,
    directories: dict[str, Path],
    format: str,
    safe_serialization: bool,
) -> None:
    """Gather every adapter in ``directories`` (adapter name -> directory) to rank 0 and write
    each as one ordinary adapter there; the other ranks write nothing."""
    timeout, key = timeout_seconds(), f"peftplug/save/{next(_save_ids)}"
    own = _step(group, f"{key}/collect", timeout, lambda: {n: local_pieces(peft_model, n) for n in directories})
    gathered = group.gather({name: state.tensors for name, (state, _) in own.items()})
    root = _common_root(directories)
    files: dict[str, bytes] = {}
    if group.rank == 0:

        def build() -> None:
            for name, (state, axes) in own.items():
                tensors = {
                    k: join_arrays([rank_tensors[name][k] for rank_tensors in gathered], axes[k], k)
                    for k in state.tensors
                }
                whole = state_for_format(
                    AdapterState(state.config, tensors, state.extra_tensors), peft_model.base_model.model, format
                )
                for file_name, content in _format_files(peft_model, whole, format, safe_serialization).items():
                    files[_relative(directories[name], root, file_name)] = content

        _stage_and_commit(group, key, timeout, root, files, build, _stale_shards(directories))
    else:
        _stage_and_commit(group, key, timeout, root, files, None, [])


def save_shards(
    peft_model: PeftModel,
    group: TensorParallelGroup,
    directories: dict[str, Path],
    format: str,
    safe_serialization: bool,
) -> None:
    """Each rank writes its own pieces of every adapter (``*.tpNN-of-DD.*``, or the format's own
    naming, see :func:`~peftplug.distributed.tp_shards.shard_namer`); rank 0 also writes the config (one
    recording a ``tensor_parallel_degree``, PaddleNLP's, records the degree, as PaddleNLP's
    unmerged save does) and ``tensor_parallel.json`` (each tensor's split axis)."""
    timeout, key = timeout_seconds(), f"peftplug/save/{next(_save_ids)}"
    own = _step(group, f"{key}/collect", timeout, lambda: {n: local_pieces(peft_model, n) for n in directories})
    root = _common_root(directories)
    files: dict[str, bytes] = {}

    def build() -> None:
        for name, (state, axes) in own.items():
            for file_name, content in _format_files(peft_model, state, format, safe_serialization).items():
                if file_name.endswith(".json"):
                    if group.rank == 0:
                        files[_relative(directories[name], root, file_name)] = config_of_degree(content, group.degree)
                else:
                    namer = shard_namer(peft_model._peft_manager.formats.get(format))
                    sharded = namer(file_name, group.rank, group.degree)
                    files[_relative(directories[name], root, sharded)] = content
            if group.rank == 0:
                files[_relative(directories[name], root, INDEX_NAME)] = index_json(group.degree, format, axes)

    stale = [p for p in _stale_shards(directories) if p.name != INDEX_NAME]
    _stage_and_commit(group, key, timeout, root, files, build, stale, keep=set(files))


def load_shards(peft_model: PeftModel, shard_set: ShardSet, adapter_name: str, format: str | None) -> None:
    """Load the shard files of ``shard_set`` into a model sharded over the same number of ranks.

    Another degree (an unsharded model is degree 1) is an error naming both degrees. Every rank
    joins the (small) adapter and keeps its own piece, so the pieces need not match the model's
    placements file by file.
    """
    group = group_of(peft_model)
    degree = group.degree if group is not None else 1
    if shard_set.degree != degree:
        raise TensorParallelError(
            f"the adapter in {str(shard_set.directory)!r} is split for tensor-parallel degree {shard_set.degree}, "
            f"but this model is sharded over {degree} rank(s) (degree {degree}); load it into a model of degree "
            f"{shard_set.degree}, or join it first (peftplug merge, peftplug.distributed.tp_shards.join_shard_directory): "
            "a merged adapter loads at any degree"
        )
    peft_model.load_adapter_state(join_shards(shard_set, format), adapter_name)


def read_config_of_shards(shard_set: ShardSet, format: str | None) -> AdapterState:
    """Rank 0's pieces (for the config; its tensors are pieces, not the adapter)."""
    from peftplug.distributed.tp_shards import read_rank

    return read_rank(shard_set, 0, format)


def _stage_and_commit(
    group: TensorParallelGroup,
    key: str,
    timeout: float,
    root: Path,
    files: dict[str, bytes],
    build: Callable[[], None] | None,
    stale: list[Path],
    keep: set[str] | None = None,
) -> None:
    """Build and stage this rank's ``files`` under ``root``, rename them once every rank has
    staged, then wait until every rank has renamed; rank 0 finally removes ``stale`` files."""
    progress = {"agreeing": False, "agreed": False}

    def staged() -> None:
        progress["agreeing"] = True
        agree(group, f"{key}/staged", None, timeout)
        progress["agreed"] = True

    commit_error: Exception | None = None
    try:
        if build is not None:
            build()
        if files:
            write_files_atomically(root, files, before_commit=staged)
        else:
            staged()
    except Exception as error:
        if progress["agreeing"] and not progress["agreed"]:
            raise  # another rank failed: agree's error says which
        if not progress["agreed"]:
            agree(group, f"{key}/staged", error, timeout)
        commit_error = error  # renaming failed after every rank had staged
    if group.rank == 0 and commit_error is None:
        kept = {root / name for name in (keep or ())}
        try:
            for path in stale:
                if path not in kept:
                    path.unlink(missing_ok=True)
        except OSError as error:
            commit_error = error
    agree(group, f"{key}/committed", commit_error, timeout)


def _format_files(
    peft_model: PeftModel, state: AdapterState, format: str, safe_serialization: bool
) -> dict[str, bytes]:
    from peftplug.adapter_io import adapter_files

    return adapter_files(state, format, safe_serialization=safe_serialization, manager=peft_model._peft_manager)


def _common_root(directories: dict[str, Path]) -> Path:
    return Path(os.path.commonpath([str(d) for d in directories.values()]))


def _relative(directory: Path, root: Path, name: str) -> str:
    sub = directory.relative_to(root)
    return str(sub / name) if str(sub) != "." else name


def _stale_shards(directories: dict[str, Path]) -> list[Path]:
    """Shard files and indexes already in the directories: they would contradict the new save."""
    return [path for directory in directories.values() for path in shard_files(directory)]


def shards_to_load(directory: Path, format: str | None) -> ShardSet | None:
    """The shard set to load from ``directory``: None when it holds no shard files, or when the
    shards' files under their usual names, an ordinary (merged) adapter (of ``format`` when
    given), are there too: it wins."""
    from peftplug.manager import get_plugin_manager

    shard_set = find_shard_set(directory)
    if shard_set is None:
        return None
    merged_there = all((directory / usual).is_file() for usual in shard_set.files[0].values())
    if merged_there and format is not None:
        merged_there = get_plugin_manager().formats.get(format).detect(directory)
    return None if merged_there else shard_set
