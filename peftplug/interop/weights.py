"""Copy a base model's weights between Hugging Face transformers (PyTorch) and PaddleNLP (Paddle).

:func:`copy_base_weights` serves the same base on both frameworks: each model's naming convention
is its backend's (:attr:`Backend.convention <peftplug.registration.Backend>`), renames and
transposes come from the family's architecture plugin (:mod:`peftplug.interop.name_maps`), fused
modules one library splits (GPT-2's ``c_attn``, PaddleNLP Llama's ``qkv_proj`` and
``gate_up_fused_proj``) are sliced or joined. Nothing is written until
every parameter of the target has a value of the right shape, so a failed copy leaves the target
as it was. The tensors are read and written through each model's backend
(:meth:`~peftplug.backend.BackendOps.state_tensors`, ``to_numpy``, ``copy_into``): a torch DTensor
is gathered whole to read and keeps this rank's piece when written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from peftplug.errors import BackendError, PeftplugError
from peftplug.interop.name_maps import (
    NameMapError,
    NameMatch,
    architecture_for,
    convention,
    fused_output_order,
    fused_part_sizes,
    library_of,
    map_name_candidates,
    weight_layout,
)
from peftplug.manager import PluginManager, get_plugin_manager
from peftplug.registration import Architecture, WeightLayout

_SHOWN = 8


class WeightCopyError(PeftplugError, ValueError):
    """Base weights cannot be copied: parameters without a counterpart, or shapes that differ."""


def copy_base_weights(
    source: Any, target: Any, architecture: str | Architecture | None = None, *, manager: PluginManager | None = None
) -> dict[str, tuple[str, ...]]:
    """Copy ``source``'s weights into ``target``: a transformers model into the equivalent
    PaddleNLP model, or back.

    ``architecture`` is a registered family's name (``"llama"``, ``"qwen2"``, ``"bloom"``,
    ``"gpt2"``) or an :class:`~peftplug.registration.Architecture`; by default it is found from
    the models' ``config.model_type``, else from the parameter names. Every parameter and
    persistent buffer of ``target`` must get a value and every one of ``source`` must be used;
    otherwise :class:`WeightCopyError` names the parameters left unmatched on each side, or the
    parameter whose shapes differ with both shapes. Tied parameters (PaddleNLP's Bloom and GPT
    always tie the output layer to the word embeddings) must receive equal values. Values are
    cast to the target's dtypes. Returns ``{target name: source name(s) it came from}``.
    ``manager``: the plugin manager whose families to use (the process-wide one by default).
    """
    manager = manager or get_plugin_manager()
    (source_ops, source_side), (target_ops, target_side) = (
        _backend_of(source, "source", manager),
        _backend_of(target, "target", manager),
    )
    if source_side == target_side:
        raise WeightCopyError(
            f"copy_base_weights copies between naming conventions; both models are "
            f"{library_of(source_side, manager)} ({source_ops.name})"
        )
    source_values = _read(source, source_ops)
    target_tensors = target_ops.state_tensors(target)
    # the canonical convention's names are the ambiguous ones (HF Llama and Qwen2 share theirs)
    names = source_values if convention(target_side, manager).canonical else target_tensors
    family = _family(architecture, source, target, names, manager)
    heads = _head_counts(source, target)
    plan, origins = _plan(family, source_values, target_tensors, source_side, target_side, heads, manager)
    _check_ties(plan, origins, target_tensors)
    for name, value in plan.items():
        target_ops.copy_into(target_tensors[name], value, name)
    return origins


# ---------------------------------------------------------------- planning (framework-free)
def _plan(
    family: Architecture,
    source: dict[str, np.ndarray],
    target: dict[str, Any],
    source_side: str,
    target_side: str,
    heads: tuple[int | None, int | None],
    manager: PluginManager | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Every target parameter's new value, from the source's, or a WeightCopyError."""
    plan: dict[str, np.ndarray] = {}
    origins: dict[str, tuple[str, ...]] = {}
    no_map: list[str] = []
    missing: list[str] = []
    shapes: list[str] = []
    for name, tensor in target.items():
        candidates = map_name_candidates(name, family, source_side, target_side, manager=manager)
        if not candidates:
            no_map.append(name)
            continue
        # a name can be plain or part of a fused module on the other side: take the reading
        # whose source parameters exist
        match = next((m for m in candidates if all(n in source for n in m.names)), None)
        if match is None:
            absent = [n for n in candidates[0].names if n not in source]
            missing.append(f"{name} (from {', '.join(absent)})")
            continue
        try:
            layout = weight_layout(match.module, source_side, manager)
            value = _to_target_layout([source[n] for n in match.names], match, layout, heads)
        except ValueError as error:
            shapes.append(f"{name}: {error}")
            continue
        expected = tuple(tensor.shape)
        if value.shape != expected:
            got = " + ".join(f"{n} {list(source[n].shape)}" for n in match.names)
            shapes.append(f"{name} is {list(expected)} in the target but {got} gives {list(value.shape)}")
            continue
        plan[name] = value
        origins[name] = match.names
    # a tied source parameter (one array under two names) counts as used once either name is
    used = {id(source[n]) for names in origins.values() for n in names}
    unused = [n for n in source if id(source[n]) not in used]
    problems = []
    if shapes:
        problems.append(f"shapes differ: {_list(shapes)}")
    if no_map:
        problems.append(f"target parameters with no {family.name!r} module map: {_list(no_map)}")
    if missing:
        problems.append(f"target parameters whose source parameter is absent: {_list(missing)}")
    if unused and not problems:
        problems.append(f"source parameters no target parameter takes: {_list(unused)}")
    if problems:
        raise WeightCopyError(
            f"cannot copy {library_of(source_side, manager)} weights into the {library_of(target_side, manager)} model "
            f"(architecture {family.name!r}): " + "; ".join(problems)
        )
    return plan, origins


def _to_target_layout(
    parts: list[np.ndarray], match: NameMatch, source_layout: WeightLayout | None, heads: tuple[int | None, int | None]
) -> np.ndarray:
    """Bring the source tensor(s) to the target's layout. ``match`` reads a target name in the
    source convention, whose 2-D weight layout is ``source_layout``. Works in ``[in, out]``
    orientation, where the output axis is the last: transpose an ``[out, in]`` weight the
    target stores otherwise, join parts into a fused tensor or take one part out of it (per the
    module's layout), transpose back for an ``[out, in]`` target."""
    layout = match.module.layout
    if source_layout == "out_in" and match.transpose:
        parts = [p.T for p in parts]
    if len(parts) > 1:  # the target fuses what the source keeps apart
        sizes = [p.shape[-1] for p in parts]
        value = np.concatenate(parts, axis=-1)[..., fused_output_order(layout, sizes, heads[1])]
    else:
        value = parts[0]
    if match.part is not None:  # the target is one part of what the source fuses
        index, count = match.part
        sizes = fused_part_sizes(layout, value.shape[-1], count, *heads)
        value = value[..., np.argsort(fused_output_order(layout, sizes, heads[1]))]
        start = sum(sizes[:index])
        value = value[..., start : start + sizes[index]]
    if source_layout == "in_out" and match.transpose:
        value = value.T
    return np.ascontiguousarray(value)


def _head_counts(*models: Any) -> tuple[int | None, int | None]:
    """(num_attention_heads, num_key_value_heads) from the first model config that has them."""
    for model in models:
        config = getattr(model, "config", None)
        heads = getattr(config, "num_attention_heads", None)
        if heads:
            return heads, getattr(config, "num_key_value_heads", None) or heads
    return None, None


def _list(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return f"{shown} (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else shown


def _family(
    architecture: str | Architecture | None, source: Any, target: Any, names: dict, manager: PluginManager | None
) -> Architecture:
    if architecture is not None:
        return architecture_for(architecture, manager=manager)
    for model in (source, target):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type:
            try:
                return architecture_for(model_type=model_type, manager=manager)
            except NameMapError:
                pass
    return architecture_for(names=list(names), manager=manager)


def _check_ties(plan: dict[str, np.ndarray], origins: dict, target: dict[str, Any]) -> None:
    """Target names sharing one tensor must receive equal values."""
    first: dict[int, str] = {}
    for name in plan:
        key = id(target[name])
        if key in first and not np.array_equal(plan[first[key]], plan[name]):
            other = first[key]
            raise WeightCopyError(
                f"the target ties {name!r} to {other!r} (one tensor), but the source gives them different "
                f"values ({', '.join(origins[name])} vs {', '.join(origins[other])}); tie the source's weights "
                f"or use an untied target"
            )
        first.setdefault(key, name)


# ---------------------------------------------------------------- the models' backends
def _backend_of(model: Any, role: str, manager: PluginManager) -> tuple[Any, str]:
    """The backend operations of ``model`` and the naming convention its backend declares."""
    try:
        backend = manager.backends.get(manager.detect_backend(model))
    except BackendError:
        backend = None
    if backend is None or backend.convention is None:
        raise BackendError(
            f"copy_base_weights: the {role} is a {type(model).__module__}.{type(model).__qualname__}, of no "
            "backend that declares a naming convention (torch: transformers, paddle: PaddleNLP)"
        )
    return backend.load(), backend.convention


def _read(model: Any, ops: Any) -> dict[str, np.ndarray]:
    """name -> numpy array; tied parameters map to the same array object."""
    arrays: dict[int, np.ndarray] = {}
    out = {}
    for name, tensor in ops.state_tensors(model).items():
        if id(tensor) not in arrays:
            arrays[id(tensor)] = ops.to_numpy(tensor)
        out[name] = arrays[id(tensor)]
    return out
