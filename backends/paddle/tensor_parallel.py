"""Adapters on models sharded with fleet's model parallelism (``mp``, tensor parallelism).

Fleet's ``ColumnParallelLinear`` keeps the weight's output columns of its rank (``[in, out/tp]``,
``split_axis`` 1) and ``RowParallelLinear`` its input rows (``[in/tp, out]``, ``split_axis`` 0);
each layer knows its ``model_parallel_group`` and ``world_size``. Adapter parameters are plain
Paddle parameters holding this rank's piece, marked as PaddleNLP marks them
(``is_distributed``, ``split_axis``, in Paddle's layout): see :class:`Shards`.

The core's :class:`~peftplug.backend.TensorParallelGroup` is :class:`PaddleTensorParallelGroup`:
gathers with ``all_gather_object`` on the mp group (gloo on CPU, NCCL on GPU), posts and reads
through the job's TCP store (``paddle.distributed.launch`` starts one; a failed collective does
not take it down), polling so that a rank that never arrives costs a timeout, not a hang.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import paddle
from paddle import nn

from peftplug.backends.paddle.layer import to_numpy
from peftplug.distributed.tp_shards import split_array
from peftplug.errors import BackendError

_POLL_SECONDS = 0.05


def _mp_classes() -> tuple[type, type]:
    from paddle.distributed.fleet.meta_parallel import ColumnParallelLinear, RowParallelLinear

    return ColumnParallelLinear, RowParallelLinear


def is_column_parallel(layer: Any) -> bool:
    """True for fleet's ``ColumnParallelLinear`` (PaddleNLP's mpu re-exports it)."""
    return isinstance(layer, _mp_classes()[0])


def is_row_parallel(layer: Any) -> bool:
    """True for fleet's ``RowParallelLinear``."""
    return isinstance(layer, _mp_classes()[1])


def is_parallel_linear(layer: Any) -> bool:
    """True for a fleet column- or row-parallel linear."""
    return isinstance(layer, _mp_classes())


class Shards:
    """How one adapter layer's tensors are cut over its base layer's mp group.

    ``degree`` 1 (a fleet layer built outside model parallelism) makes every operation local.
    Whole tensors are made equal on every rank by :meth:`broadcast` from the group's first rank,
    so an adapter is the same whatever each rank's random state.
    """

    def __init__(self, base_layer: nn.Layer):
        self.degree = int(getattr(base_layer, "world_size", 1) or 1)
        self.group = getattr(base_layer, "model_parallel_group", None) if self.degree > 1 else None
        self.rank = self.group.rank if self.group is not None else 0
        if self.group is not None and self.rank < 0:
            raise BackendError(
                f"this process is not in the model-parallel group {self.group} of {type(base_layer).__name__}"
            )

    def broadcast(self, tensor: paddle.Tensor) -> paddle.Tensor:
        """``tensor`` as the group's first rank holds it (a collective)."""
        if self.group is not None:
            paddle.distributed.broadcast(tensor, src=self.group.ranks[0], group=self.group)
        return tensor

    def piece(self, whole: np.ndarray, axis: int | None) -> np.ndarray:
        """This rank's piece of ``whole`` cut on ``axis`` (None: all of it)."""
        return np.ascontiguousarray(split_array(whole, axis, self.rank, self.degree))

    def gather(self, tensor: paddle.Tensor, axis: int | None) -> np.ndarray:
        """The whole tensor from every rank's ``tensor`` concatenated on ``axis`` (a collective
        when split; every rank of the group must call it)."""
        local = to_numpy(tensor)
        if axis is None or self.group is None:
            return local
        pieces: list[Any] = []
        paddle.distributed.all_gather_object(pieces, local, group=self.group)
        return np.concatenate(pieces, axis=axis)

    def parameter(self, layer: nn.Layer, whole: paddle.Tensor, axis: int | None) -> Any:
        """A new parameter of ``layer`` holding this rank's piece of ``whole`` (split on Paddle
        ``axis``, or whole when None), marked ``is_distributed`` / ``split_axis`` as PaddleNLP's
        parallel LoRA layers mark theirs."""
        piece = self.piece(to_numpy(whole), axis)
        parameter = layer.create_parameter(
            list(piece.shape),
            dtype=whole.dtype,
            is_bias=False,
            default_initializer=nn.initializer.Assign(piece),
        )
        mark(parameter, axis if self.degree > 1 else None)
        return parameter


def mark(parameter: Any, axis: int | None) -> None:
    """Record on ``parameter`` the axis it is split on (None: whole on every rank)."""
    parameter.is_distributed = axis is not None
    if axis is not None:
        parameter.split_axis = axis


def pieces_of(parameter: Any) -> int:
    """Over how many ranks ``parameter`` is split: fleet's mp degree for an ``is_distributed``
    parameter (fleet's mp layers, PaddleNLP's and peftplug's parallel adapters), else 1."""
    if not getattr(parameter, "is_distributed", False):
        return 1
    from paddle.distributed.fleet.base import topology

    hcg = topology._HYBRID_PARALLEL_GROUP
    return hcg.get_model_parallel_world_size() if hcg is not None else 1


def local_piece(tensor: Any) -> tuple[np.ndarray, int | None]:
    """This rank's piece of ``tensor`` as numpy, in its own layout, and the axis it is split on
    (``split_axis`` when ``is_distributed``; None: whole)."""
    axis = getattr(tensor, "split_axis", None) if getattr(tensor, "is_distributed", False) else None
    return to_numpy(tensor), axis


class PaddleTensorParallelGroup:
    """The core's :class:`~peftplug.backend.TensorParallelGroup` over fleet's model-parallel
    group: ``gather`` is ``all_gather_object`` on it; ``post``/``read`` use the job's TCP store,
    under keys namespaced by the group's global ranks (several mp groups share one store)."""

    def __init__(self, group: Any):
        from paddle.base import core

        self._group = group
        self.rank = group.rank
        self.degree = group.nranks
        self.engine = "tensor-parallel"
        self._namespace = "peftplug/mp" + "-".join(str(r) for r in group.ranks)
        try:
            self._store = core.create_or_get_global_tcp_store()
        except Exception as error:
            raise BackendError(
                "saving a tensor-parallel Paddle model needs the job's TCP store (start the job with "
                f"`python -m paddle.distributed.launch` and call fleet.init first): {error}"
            ) from error

    def gather(self, payload: Any) -> list[Any] | None:
        """Every rank's ``payload`` on rank 0 (in rank order), None elsewhere."""
        received: list[Any] = []
        paddle.distributed.all_gather_object(received, payload, group=self._group)
        return received if self.rank == 0 else None

    def post(self, key: str, value: str) -> None:
        """``value`` under ``key``; a counter beside it says it is there (the store's ``get``
        blocks on absent keys, its ``add`` of 0 does not)."""
        self._store.set(f"{self._namespace}/{key}", value)
        self._store.add(f"{self._namespace}/{key}#posted", 1)

    def read(self, keys: list[str], timeout: float) -> dict[str, str]:
        """The values of ``keys`` posted within ``timeout`` seconds (polling the store)."""
        deadline = time.monotonic() + timeout
        posted: dict[str, str] = {}
        while True:
            for key in keys:
                full = f"{self._namespace}/{key}"
                if key not in posted and self._store.add(f"{full}#posted", 0) > 0:
                    posted[key] = self._store.get(full).decode()
            if len(posted) == len(keys) or time.monotonic() >= deadline:
                return posted
            time.sleep(_POLL_SECONDS)

    def local_piece(self, tensor: Any) -> tuple[np.ndarray, int | None]:
        """This rank's piece of ``tensor`` and its split axis (Paddle's ``split_axis``)."""
        return local_piece(tensor)


def tensor_parallel_group(model: nn.Layer) -> PaddleTensorParallelGroup | None:
    """The mp group of the first fleet parallel layer in ``model`` over 2 or more ranks (its
    ``model_parallel_group``), or None when ``model`` is not sharded."""
    for layer in model.sublayers(include_self=True):
        group = getattr(layer, "model_parallel_group", None)
        if group is not None and int(getattr(layer, "world_size", 1) or 1) > 1:
            return PaddleTensorParallelGroup(group)
    return None
