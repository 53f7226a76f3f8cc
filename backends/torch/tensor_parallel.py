"""Adapters on models sharded with ``torch.distributed.tensor.parallel`` (DTensor).

``parallelize_module`` with ``ColwiseParallel`` / ``RowwiseParallel`` turns a Linear's weight into
a DTensor (``Shard(0)``: output axis, ``Shard(1)``: input axis) and hangs a forward pre-hook
(local input -> DTensor in the layout the style wants) and a forward hook (DTensor output -> the
style's output layout, local unless ``use_local_output=False``) on the module.

An adapter layer wrapping such a Linear takes those hooks over (:func:`adopt_parallel_hooks`):
its forward then sees the DTensor input the base layer would have seen, computes the base output
and the adapter's path as DTensors, adds them in one placement, and the style's output hook
turns the sum into what the next module expects, so both paths share one collective. Adapter
tensors are DTensor parameters placed to follow the base weight's axes
(:func:`dtensor_parameter`); where their gradient comes out ``Partial`` (a whole ``lora_A`` of a
column-parallel layer), a hook reduces it to the parameter's own placement.

Nothing here imports ``torch.distributed`` unless a model is sharded: a tensor can only be a
DTensor once ``torch.distributed.tensor`` is loaded, which :func:`is_dtensor` checks first.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from peftplug.errors import BackendError

_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
_POLL_SECONDS = 0.05


def is_dtensor(tensor: Any) -> bool:
    """True for a DTensor (without importing ``torch.distributed.tensor``)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def is_parallel_module(module: nn.Module) -> bool:
    """True for a module ``parallelize_module`` / ``distribute_module`` has sharded."""
    return bool(getattr(module, "_distribute_module_applied", False))


def split_axis(tensor: Any, name: str = "tensor") -> int | None:
    """The axis a DTensor is sharded on (non-negative), None when replicated or not a DTensor.

    Only 1-D meshes with ``Shard``/``Replicate`` placements are supported; anything else is an
    error naming ``name`` and its placements.
    """
    if not is_dtensor(tensor):
        return None
    from torch.distributed.tensor import Replicate, Shard

    placements = tensor.placements
    if len(placements) != 1 or type(placements[0]) not in (Shard, Replicate):
        raise BackendError(
            f"{name} is placed {placements} on a {tensor.device_mesh.ndim}-D mesh; peftplug shards adapters "
            "over 1-D tensor-parallel meshes with Shard or Replicate placements only"
        )
    placement = placements[0]
    return placement.dim % tensor.ndim if isinstance(placement, Shard) else None


def dtensor_parameter(full: torch.Tensor, weight: Any, axis_map: dict[int, int]) -> nn.Parameter:
    """``full`` as a parameter sharded to follow ``weight``: if ``weight`` is split on axis
    ``a`` and ``axis_map`` maps ``a`` to ``b``, the result is split on its axis ``b``, else
    replicated. Rank 0's values are scattered (every rank gets the same adapter whatever its
    random state). A plain parameter when ``weight`` is not a DTensor."""
    if not is_dtensor(weight):
        return nn.Parameter(full)
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    axis = split_axis(weight, "the base layer's weight")
    placement = Shard(axis_map[axis]) if axis in axis_map else Replicate()
    parameter = nn.Parameter(distribute_tensor(full, weight.device_mesh, [placement]))
    parameter.register_hook(_ReduceGradient(parameter.placements))
    return parameter


class _ReduceGradient:
    """A gradient hook giving a DTensor parameter's gradient the parameter's own placement (a
    ``Partial`` gradient, each rank's share of a whole tensor's gradient, is summed)."""

    def __init__(self, placements: tuple):
        self.placements = tuple(placements)

    def __call__(self, grad: Any) -> Any:
        if is_dtensor(grad) and tuple(grad.placements) != self.placements:
            return grad.redistribute(grad.device_mesh, self.placements)
        return grad


def adopt_parallel_hooks(wrapper: nn.Module, base: nn.Module) -> None:
    """Move the tensor-parallel input/output hooks of ``base`` onto ``wrapper``, which takes
    its place in the model (the adapter's path then runs between them, in DTensor)."""
    if not is_parallel_module(base):
        return
    for attribute in _HOOK_DICTS:
        source, target = getattr(base, attribute), getattr(wrapper, attribute)
        target.update(source)
        source.clear()
    wrapper._distribute_module_applied = True
    wrapper._peftplug_adopted_hooks = True
    base._distribute_module_applied = False


def return_parallel_hooks(wrapper: nn.Module, base: nn.Module) -> None:
    """Give ``base`` back the hooks :func:`adopt_parallel_hooks` took (on unload)."""
    if not getattr(wrapper, "_peftplug_adopted_hooks", False):
        return
    for attribute in _HOOK_DICTS:
        source, target = getattr(wrapper, attribute), getattr(base, attribute)
        target.update(source)
        source.clear()
    base._distribute_module_applied = True
    wrapper._distribute_module_applied = wrapper._peftplug_adopted_hooks = False


def local_piece(tensor: Any, name: str = "tensor") -> tuple[np.ndarray, int | None]:
    """This rank's piece of ``tensor`` as numpy, and the axis it is split on (None: whole)."""
    from peftplug.backends.torch.layer import to_numpy

    if not is_dtensor(tensor) or tensor.device_mesh.ndim > 1:
        return to_numpy(tensor), None  # a DTensor on a 2-D mesh gathered whole: a collective
    axis = split_axis(tensor, name)
    return to_numpy(tensor.to_local()), axis


def keep_local_piece(parameter: Any, array: np.ndarray) -> None:
    """Copy this rank's piece of the whole ``array`` into the DTensor ``parameter`` (no
    communication: every rank holds ``array``)."""
    from torch.distributed.tensor import distribute_tensor

    whole = torch.from_numpy(np.ascontiguousarray(array)).to(dtype=parameter.dtype)
    piece = distribute_tensor(whole, parameter.device_mesh, parameter.placements, src_data_rank=None)
    with torch.no_grad():
        parameter.to_local().copy_(piece.to_local())


def find_mesh(model: nn.Module) -> Any:
    """The device mesh of the first DTensor parameter in ``model``, or None."""
    if sys.modules.get("torch.distributed.tensor") is None:
        return None
    for parameter in model.parameters():
        if is_dtensor(parameter):
            return parameter.device_mesh
    return None


class TorchTensorParallelGroup:
    """The core's :class:`~peftplug.backend.TensorParallelGroup` over a DTensor mesh: gathers with
    ``torch.distributed.gather_object`` on the mesh's process group, posts and reads through the
    default process group's store (which outlives a failed collective).

    A 2-D mesh (``fully_shard`` over one axis, tensor parallelism over the other) is gathered over
    every rank of the job: each rank's pieces are then the whole tensors (see :func:`local_piece`).
    """

    def __init__(self, mesh: Any, engine: str = "tensor-parallel"):
        import torch.distributed as dist

        if mesh.ndim > 2:
            raise BackendError(
                f"the model is sharded over a {mesh.ndim}-D device mesh {tuple(mesh.shape)}; "
                "peftplug supports 1-D meshes and 2-D ones (fully_shard x tensor parallel)"
            )
        self.mesh = mesh
        self.engine = engine
        if mesh.ndim == 1:
            self.rank, self.degree, self._process_group = mesh.get_local_rank(), mesh.size(), mesh.get_group()
        else:
            self.rank, self.degree, self._process_group = dist.get_rank(), dist.get_world_size(), dist.group.WORLD
        self._store = dist.distributed_c10d._get_default_store()
        self._dist = dist

    def gather(self, payload: Any) -> list[Any] | None:
        """Every rank's ``payload`` on rank 0 (in rank order), None elsewhere."""
        dist = self._dist
        received = [None] * self.degree if self.rank == 0 else None
        first = dist.get_global_rank(self._process_group, 0)
        dist.gather_object(payload, received, dst=first, group=self._process_group)
        return received

    def post(self, key: str, value: str) -> None:
        """``value`` under ``key`` in the store."""
        self._store.set(key, value)

    def read(self, keys: list[str], timeout: float) -> dict[str, str]:
        """The values of ``keys`` posted within ``timeout`` seconds (polling the store)."""
        deadline = time.monotonic() + timeout
        posted: dict[str, str] = {}
        while True:
            for key in keys:
                if key not in posted and self._store.check([key]):
                    posted[key] = self._store.get(key).decode()
            if len(posted) == len(keys) or time.monotonic() >= deadline:
                return posted
            time.sleep(_POLL_SECONDS)

    def local_piece(self, tensor: Any) -> tuple[np.ndarray, int | None]:
        """This rank's piece of ``tensor`` and its split axis."""
        return local_piece(tensor)


def tensor_parallel_group(model: nn.Module) -> TorchTensorParallelGroup | None:
    """The group ``model`` is sharded over (DTensor parameters on a mesh of 2 or more ranks):
    tensor parallelism, or FSDP2's ``fully_shard`` (every parameter then put back in its
    sharded form first, see :mod:`peftplug.backends.torch.fsdp`)."""
    from peftplug.backends.torch.fsdp import is_fully_sharded, reshard

    engine = "tensor-parallel"
    if is_fully_sharded(model):
        reshard(model)
        engine = "fully_shard (FSDP2)"
    mesh = find_mesh(model)
    if mesh is not None and mesh.ndim == 2:
        engine = "fully_shard x tensor-parallel (2-D mesh)"
    if mesh is None or mesh.size() < 2:
        return None
    return TorchTensorParallelGroup(mesh, engine)
