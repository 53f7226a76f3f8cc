"""Adapters on models sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``).

FSDP2 keeps each managed parameter as a ``Shard(0)`` DTensor over its data-parallel mesh and
gathers it whole around the owning module's forward and backward. Two orders are supported:

- ``get_peft_model`` first, ``fully_shard`` after (the usual one): the adapter tensors are
  ordinary parameters of the sharded modules, FSDP2 shards, gathers and reduces them like the
  base's, and nothing here is needed until the adapter is saved;
- ``fully_shard`` first, then ``get_peft_model`` / ``PeftModel.from_pretrained``: the new adapter
  tensors are plain parameters FSDP2 does not know, so :func:`shard_adapter_layers` makes each
  new adapter layer an FSDP2 unit of its own (its base layer's parameters ignored, they stay in
  their unit), on the mesh of the unit around it.

Saving reads every rank's ``Shard(0)`` piece through the same group as tensor parallelism
(:class:`~peftplug.backends.torch.tensor_parallel.TorchTensorParallelGroup`), after
:func:`reshard` has put every parameter back in its sharded form.

Nothing here imports ``torch.distributed.fsdp`` unless the user has: a model can only be sharded
once it is loaded.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from peftplug.backends.torch.tensor_parallel import is_dtensor, is_parallel_module
from peftplug.errors import PeftplugError


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 units in ``model`` (modules ``fully_shard`` was applied to), outermost first."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None or not hasattr(fsdp, "FSDPModule"):
        return []
    return [module for module in model.modules() if isinstance(module, fsdp.FSDPModule)]


def is_fully_sharded(model: nn.Module) -> bool:
    """True when ``fully_shard`` was applied to ``model`` or a module in it."""
    return bool(fsdp_modules(model))


def reshard(model: nn.Module) -> None:
    """Put every FSDP2-managed parameter of ``model`` back in its sharded (DTensor) form: after
    a forward without backward the root unit keeps its parameters gathered."""
    for module in fsdp_modules(model):
        module.reshard()


def shard_adapter_layers(model: nn.Module, layers: dict[str, nn.Module], adapter_name: str) -> None:
    """Make each adapter layer in ``layers`` (by dotted name) added to an already sharded
    ``model`` an FSDP2 unit on the mesh of the unit around it, its base layer's parameters left
    to that unit. A layer under no unit is an error naming it."""
    from torch.distributed.fsdp import fully_shard

    units = fsdp_modules(model)
    for name, layer in layers.items():
        enclosing = [unit for unit in units if any(module is layer for module in unit.modules())]
        if not enclosing:
            raise PeftplugError(
                f"adapter {adapter_name!r} on {name}: the model is sharded with fully_shard, but not this module; "
                "shard the whole model (fully_shard at its root), or call get_peft_model before fully_shard"
            )
        mesh = next(p.device_mesh for p in enclosing[-1].parameters() if is_dtensor(p))
        base = getattr(layer, "base_layer", None) or getattr(layer, "original_module", None)
        ignored = set(base.parameters()) if base is not None else set()
        fully_shard(layer, mesh=mesh, ignored_params=ignored)


def refuse_after_sharding(model: nn.Module, config: Any) -> None:
    """Before an adapter is added to ``model``: when it is already sharded with ``fully_shard``,
    refuse what FSDP2 cannot take in, naming it: ``modules_to_save`` (copies of sharded modules),
    a tensor-parallel base (a 2-D mesh), a second adapter once adapter layers are there, and any
    adapter once the model has run (FSDP2 has then fixed its units)."""
    if not is_fully_sharded(model):
        return
    from peftplug.backends.torch.layer import TorchAdapterLayer

    advice = "call get_peft_model (and add every adapter) before fully_shard"
    parallel = [name for name, module in model.named_modules() if is_parallel_module(module)]
    if parallel:
        raise PeftplugError(
            f"an adapter on a model sharded with fully_shard over a tensor-parallel one ({parallel[0]} is "
            f"tensor parallel): FSDP2 would shard the new adapter over the 2-D mesh; {advice}"
        )
    if getattr(config, "modules_to_save", None):
        raise PeftplugError(
            f"modules_to_save={list(config.modules_to_save)} on a model already sharded with fully_shard: the copies "
            f"would be of sharded modules, outside FSDP2's units; {advice}"
        )
    adapted = [name for name, module in model.named_modules() if isinstance(module, TorchAdapterLayer)]
    if adapted:
        raise PeftplugError(
            f"another adapter on a model already sharded with fully_shard: {adapted[0]} already holds one, and FSDP2 "
            f"cannot add parameters to a unit it has built; {advice}"
        )
    if any(getattr(unit._get_fsdp_state(), "_is_root", None) is not None for unit in fsdp_modules(model)):
        raise PeftplugError(
            "an adapter on a fully_shard model that has already run: FSDP2 fixes its units at the first forward "
            f"and takes no new one after; add the adapter before running the model, or {advice}"
        )
