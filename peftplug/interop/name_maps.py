"""Names across the registered naming conventions (HF transformers', PaddleNLP's, ...), from the
registered architectures.

Pure functions, no framework imports: the conversion code and :mod:`peftplug.interop.weights` use them.
A convention is named by its registered name (:class:`~peftplug.registration.Convention`:
``"hf"``, ``"paddle"``); one a family does not map, or no plugin registers, is a
:class:`NameMapError` naming it.

- :func:`architecture_for` picks a family: by name, by ``model_type`` (in any convention), or
  from parameter / module names (the family whose map covers them all, in one convention).
- :func:`map_name` maps one module path or parameter name to another convention and says how
  the tensor changes (:class:`NameMatch`); :func:`to_names`, :func:`to_name` and
  :func:`transposes` are its short forms, :func:`to_paddle_name`, :func:`to_paddle_names`,
  :func:`to_hf_name` and :func:`to_hf_names` those for the two built-in conventions;
  :func:`map_name_candidates` lists every reading (plain or as part of a fused module).
- :func:`side_of` tells which convention names are in; :func:`weight_layout` how a module's
  2-D weight is laid out in a convention.
- :func:`fused_part_sizes` and :func:`fused_output_order` place the parts of a fused
  projection on its output axis.
- :func:`prefix_block_order` reorders the ``2 * layers`` key/value blocks of a prefix cache.

A name is a module path (``model.layers.0.self_attn.q_proj``) or anything below one
(``model.layers.0.self_attn.q_proj.weight``, ``...q_proj.lora_A.weight``): the module part is
mapped, the rest is kept, and a parameter the family renames (Bloom's ``lm_head.weight`` is
PaddleNLP's ``lm_head.decoder_weight``) is renamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from peftplug.errors import PeftplugError, RegistryError
from peftplug.registration import Architecture, Convention, ModuleMap, WeightLayout

if TYPE_CHECKING:
    from peftplug.manager import PluginManager


class NameMapError(PeftplugError, LookupError):
    """A name has no counterpart in another convention, a convention is unknown, or the family
    cannot be told."""


@dataclass(frozen=True)
class NameMatch:
    """Where a name lands in the ``target`` convention, and what happens to its tensor.

    ``names``: the name(s) in the target; several when the target splits what the ``source``
    convention fuses (GPT-2's ``c_attn`` -> ``q_proj``, ``k_proj``, ``v_proj``). ``part``: when
    the name is one of several parts the target fuses, ``(index, count)``; else None. The
    module's ``layout`` says where the parts sit on the fused output axis
    (:func:`fused_output_order`). ``param``: the rest of the name below the module (``"weight"``,
    ``"lora_A.weight"``, ``""`` for the module itself). ``transpose``: the 2-D ``weight``
    transposes between the two (its :func:`weight_layout` differs). ``module``: the
    :class:`ModuleMap` that matched.
    """

    names: tuple[str, ...]
    part: tuple[int, int] | None
    param: str
    transpose: bool
    module: ModuleMap
    source: str
    target: str


def _manager(manager: PluginManager | None) -> PluginManager:
    if manager is not None:
        return manager
    from peftplug.manager import get_plugin_manager

    return get_plugin_manager()


def convention(name: str, manager: PluginManager | None = None) -> Convention:
    """The registered convention called ``name``; :class:`NameMapError` listing the registered
    ones when no plugin registers it."""
    try:
        return _manager(manager).conventions.get(name)
    except RegistryError as error:
        raise NameMapError(str(error)) from None


def canonical_convention(manager: PluginManager | None = None) -> Convention:
    """The registered convention :class:`~peftplug.state.AdapterState` is canonical in (HF's)."""
    conventions = _manager(manager).conventions
    found = next((c for c in conventions if c.canonical), None)
    if found is None:
        raise NameMapError(f"no registered convention is canonical; registered: {', '.join(conventions.names())}")
    return found


def library_of(name: str, manager: PluginManager | None = None) -> str:
    """The library a convention names models of (``"transformers"``, ``"PaddleNLP"``), for messages."""
    found = convention(name, manager)
    return found.library or found.label or found.name


def weight_layout(module: ModuleMap, name: str, manager: PluginManager | None = None) -> WeightLayout | None:
    """How ``module``'s 2-D ``weight`` is laid out in convention ``name``: ``"out_in"`` or
    ``"in_out"``; None for a ``"same"`` module, stored alike everywhere."""
    if module.kind == "same":
        return None
    found = convention(name, manager)
    if module.kind == "conv1d" and found.canonical:
        return "in_out"
    return found.linear_weight


def _labels(manager: PluginManager) -> str:
    return " <-> ".join(c.label or c.name for c in manager.conventions)


def _known(manager: PluginManager, mapped_only: bool = False) -> str:
    names = sorted(a.name for a in manager.architectures if a.modules or not mapped_only)
    return ", ".join(names) or "none"


def _answers_to(architecture: Architecture, model_type: str) -> bool:
    return model_type in architecture.model_types or any(
        model_type in types for types in architecture.convention_model_types.values()
    )


def architecture_for(
    architecture: str | Architecture | None = None,
    *,
    model_type: str | None = None,
    names: Iterable[str] | None = None,
    manager: PluginManager | None = None,
) -> Architecture:
    """The registered family for an explicit ``architecture`` (name or object), else a
    ``model_type`` (in any convention: transformers' or PaddleNLP's), else ``names`` (module
    paths or parameter names all in one convention, e.g. an adapter's keys without
    ``base_model.model.``).

    Raises :class:`NameMapError` listing the known families when none fits, or the candidates
    when several do (HF Llama and Qwen2 share their module names), asking for ``architecture=``.
    """
    manager = _manager(manager)
    if isinstance(architecture, Architecture):
        return architecture
    if architecture is not None:
        try:
            return manager.architectures.get(architecture)
        except RegistryError as error:
            raise NameMapError(str(error)) from None
    if model_type is not None:
        for candidate in manager.architectures:
            if _answers_to(candidate, model_type):
                return candidate
        if names is None:
            raise NameMapError(
                f"no registered architecture answers to model_type {model_type!r}; known: {_known(manager)}; "
                f"pass architecture=<one of them> or register a family with a plugin"
            )
    if names is None:
        raise NameMapError(f"cannot tell the model family: pass architecture= (known: {_known(manager)})")
    names = list(names)
    if not names:
        raise NameMapError(f"cannot tell the model family from no names: pass architecture= (known: {_known(manager)})")
    fits = fitting_architectures(names, manager)
    if len(fits) == 1:
        return next(iter(fits.values()))[0]
    if not fits:
        raise NameMapError(
            f"no registered architecture maps all {len(names)} names (e.g. {names[0]!r}); families with "
            f"{_labels(manager)} module maps: {_known(manager, mapped_only=True)}; pass architecture= "
            f"or register a family with a plugin"
        )
    candidates = ", ".join(
        f"{name} ({' and '.join(conventions)} names)" for name, (_, conventions) in sorted(fits.items())
    )
    raise NameMapError(f"the names fit several architectures: {candidates}; pass architecture= to choose")


def fitting_architectures(
    names: Iterable[str], manager: PluginManager | None = None
) -> dict[str, tuple[Architecture, list[str]]]:
    """The mapped families whose module map covers every one of ``names`` in one convention or
    more: ``{name: (architecture, conventions)}``."""
    names = list(names)
    fits = {
        a.name: (a, [c for c in a.conventions if _covers(a, c, names)])
        for a in _manager(manager).architectures
        if a.modules
    }
    return {name: fit for name, fit in fits.items() if fit[1]}


def side_of(names: Iterable[str], architecture: Architecture, manager: PluginManager | None = None) -> str:
    """The convention (``"hf"``, ``"paddle"``, ...) whose names ``names`` are, for
    ``architecture``: the first of the family's conventions that covers them all."""
    names = list(names)
    for name in architecture.conventions:
        if _covers(architecture, name, names):
            return name
    unmatched = " / ".join(
        f"{unmatched_names(names, architecture, c)[0]!r} ({_label(c, manager)})" for c in architecture.conventions
    )
    raise NameMapError(
        f"architecture {architecture.name!r} maps the names in none of its conventions "
        f"({', '.join(architecture.conventions) or 'none'}): {unmatched} have no map"
    )


def map_name(
    name: str, architecture: Architecture, to: str, source: str | None = None, *, manager: PluginManager | None = None
) -> NameMatch:
    """Map ``name`` (in convention ``source``; by default the first other convention of the
    family whose map matches it) to convention ``to``; see :class:`NameMatch`.

    Raises :class:`NameMapError` naming the name and the family when no module map matches, or
    the convention when the family does not map it.
    """
    matches = map_name_candidates(name, architecture, to, source, manager=manager)
    if not matches:
        raise NameMapError(_no_map_message(architecture, _sources(architecture, to, source, manager), name, manager))
    return matches[0]


def map_name_candidates(
    name: str, architecture: Architecture, to: str, source: str | None = None, *, manager: PluginManager | None = None
) -> list[NameMatch]:
    """Every way ``name`` maps to convention ``to``, the plain one first: HF Llama's ``q_proj``
    is PaddleNLP's ``q_proj``, or part 0 of ``qkv_proj`` when the Paddle model fuses q, k, v.
    ``source`` as for :func:`map_name`. Empty when no module map matches."""
    for candidate in _sources(architecture, to, source, manager):
        found = []
        for module, index, numbers, param in _matches(architecture, candidate, name):
            targets = module.paths(to)
            if not targets:
                continue
            names = tuple(_fill(pattern, numbers) for pattern in targets)
            count = len(module.paths(candidate))
            renamed = module.param_name(param, candidate, to)
            full = tuple(f"{n}.{renamed}" if renamed else n for n in names)
            part = (index, count) if count > 1 else None
            layouts = {weight_layout(module, c, manager) for c in (candidate, to)}
            transpose = module.canonical_param(param, candidate) == "weight" and len(layouts) > 1
            found.append(NameMatch(full, part, param, transpose, module, candidate, to))
        if found:
            return found
    return []


def to_names(
    name: str, architecture: Architecture, to: str, source: str | None = None, *, manager: PluginManager | None = None
) -> tuple[str, ...]:
    """The name(s) in convention ``to`` of a module path or parameter name (several for a
    module ``to`` keeps in parts); ``source`` as for :func:`map_name`."""
    return map_name(name, architecture, to, source, manager=manager).names


def to_name(
    name: str, architecture: Architecture, to: str, source: str | None = None, *, manager: PluginManager | None = None
) -> str:
    """The name in convention ``to`` of a module path or parameter name (for a part of a
    module ``to`` fuses, the fused module: :func:`map_name` tells which part); a module ``to``
    keeps in parts raises (use :func:`to_names` or :func:`map_name`)."""
    match = map_name(name, architecture, to, source, manager=manager)
    if len(match.names) != 1:
        raise NameMapError(
            f"{name!r} ({architecture.name}) is one fused module in {_label(match.source, manager)} and "
            f"{len(match.names)} in {_label(to, manager)}: {', '.join(match.names)}; use to_names() or map_name()"
        )
    return match.names[0]


def to_paddle_names(hf_name: str, architecture: Architecture) -> tuple[str, ...]:
    """The PaddleNLP name(s) of an HF module path or parameter name (several for a fused
    module PaddleNLP splits)."""
    return to_names(hf_name, architecture, "paddle", "hf")


def to_paddle_name(hf_name: str, architecture: Architecture) -> str:
    """The PaddleNLP name of an HF module path or parameter name; an HF module that PaddleNLP
    splits in parts raises (use :func:`to_paddle_names` or :func:`map_name`)."""
    return to_name(hf_name, architecture, "paddle", "hf")


def to_hf_names(paddle_name: str, architecture: Architecture) -> tuple[str, ...]:
    """The HF name(s) of a PaddleNLP module path or parameter name (several for a module
    PaddleNLP fuses, e.g. Llama's ``qkv_proj``)."""
    return to_names(paddle_name, architecture, "hf", "paddle")


def to_hf_name(paddle_name: str, architecture: Architecture) -> str:
    """The HF name of a PaddleNLP module path or parameter name (for a part of a module HF
    fuses, the fused module: :func:`map_name` tells which part); a PaddleNLP module that HF
    keeps in parts raises (use :func:`to_hf_names`)."""
    return to_name(paddle_name, architecture, "hf", "paddle")


def transposes(
    name: str,
    architecture: Architecture,
    side: str | None = None,
    to: str | None = None,
    *,
    manager: PluginManager | None = None,
) -> bool:
    """Whether the tensor called ``name`` (in convention ``side``, the canonical one by default)
    is transposed on its way to convention ``to`` (by default the first other one the family
    maps): a ``"linear"`` module's weight between ``[out, in]`` and ``[in, out]`` conventions."""
    side = side or canonical_convention(manager).name
    if to is None:
        others = [c for c in architecture.conventions if c != side]
        to = others[0] if others else side
    return map_name(name, architecture, to, side, manager=manager).transpose


def fused_part_sizes(
    layout: str, total: int, count: int, heads: int | None = None, kv_heads: int | None = None
) -> list[int]:
    """Sizes of the ``count`` parts of a fused output axis of length ``total``: equal for
    ``"concat"``; query, key, value for ``"kv_groups"`` (needs the model's ``heads`` and
    ``kv_heads``)."""
    if layout == "concat":
        if total % count:
            raise ValueError(f"fused output axis {total} does not split in {count} equal parts")
        return [total // count] * count
    if layout == "kv_groups":
        if not heads or not kv_heads:
            raise ValueError("a 'kv_groups' fused projection needs num_attention_heads and num_key_value_heads")
        head_dim, rest = divmod(total, heads + 2 * kv_heads)
        if rest or count != 3:
            raise ValueError(f"fused q/k/v axis {total} is not (heads {heads} + 2 * kv_heads {kv_heads}) * head_dim")
        return [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    raise ValueError(f"unknown fused layout {layout!r}; known: 'concat', 'kv_groups'")


def fused_output_order(layout: str, sizes: list[int], kv_heads: int | None = None) -> list[int]:
    """Where the fused output axis takes each entry from, given the parts ``sizes``:
    ``fused = concat(parts)[..., order]``, and ``concat(parts) = fused[..., argsort(order)]``.
    ``"concat"`` is the identity; ``"kv_groups"`` (q, k, v) puts each key/value group's query
    heads, key head and value head together, as PaddleNLP Llama's ``qkv_proj`` does."""
    if layout == "concat":
        return list(range(sum(sizes)))
    if layout != "kv_groups" or len(sizes) != 3 or not kv_heads:
        raise ValueError(f"layout {layout!r} with parts {sizes} and kv_heads {kv_heads} has no fused order")
    q_size, k_size, _ = sizes
    q_group, kv_group = q_size // kv_heads, k_size // kv_heads
    order = []
    for group in range(kv_heads):
        order += range(group * q_group, (group + 1) * q_group)
        order += range(q_size + group * kv_group, q_size + (group + 1) * kv_group)
        order += range(q_size + k_size + group * kv_group, q_size + k_size + (group + 1) * kv_group)
    return order


def prefix_block_order(num_layers: int, source: str, target: str) -> list[int]:
    """Reorder the ``2 * num_layers`` key/value blocks of a prefix cache.

    ``source`` / ``target`` are ``"interleaved"`` (k0, v0, k1, v1, ...) or ``"sections"``
    (k0..k(L-1), v0..v(L-1)). Returns ``order`` such that ``target_blocks[i] =
    source_blocks[order[i]]``: view the encoder output ``[T, 2L * D]`` as ``[T, 2L, D]`` and
    take ``[:, order]``.
    """
    positions = {"interleaved": lambda kv, layer: 2 * layer + kv, "sections": lambda kv, layer: kv * num_layers + layer}
    for value in (source, target):
        if value not in positions:
            raise ValueError(f"prefix block order must be 'interleaved' or 'sections', got {value!r}")
    order = [0] * (2 * num_layers)
    for layer in range(num_layers):
        for kv in (0, 1):
            order[positions[target](kv, layer)] = positions[source](kv, layer)
    return order


# ---------------------------------------------------------------- matching
def _label(name: str, manager: PluginManager | None) -> str:
    found = convention(name, manager)
    return found.label or found.name


def _sources(architecture: Architecture, to: str, source: str | None, manager: PluginManager | None) -> list[str]:
    """The conventions a name for ``to`` may be in: ``source``, or every other one the family
    maps; a convention no plugin registers, or the family does not map, raises."""
    manager = _manager(manager)
    if not architecture.modules:
        raise NameMapError(
            f"architecture {architecture.name!r} has no {_labels(manager)} module map; "
            f"families with one: {_known(manager, mapped_only=True)}"
        )
    for name in (to,) if source is None else (to, source):
        convention(name, manager)
        if name not in architecture.conventions:
            raise NameMapError(
                f"architecture {architecture.name!r} maps no module in convention {name!r}; "
                f"it maps: {', '.join(architecture.conventions)}"
            )
    return [source] if source is not None else [c for c in architecture.conventions if c != to]


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    body = r"\.".join(r"(\d+)" if part == "{n}" else re.escape(part) for part in pattern.split("."))
    return re.compile(rf"{body}(?:\.(?P<rest>.+))?")


def _fill(pattern: str, numbers: tuple[str, ...]) -> str:
    values = iter(numbers)
    return ".".join(next(values) if part == "{n}" else part for part in pattern.split("."))


def _matches(
    architecture: Architecture, convention_name: str, name: str
) -> list[tuple[ModuleMap, int, tuple[str, ...], str]]:
    """The module maps whose pattern in ``convention_name`` matches ``name``, with the pattern's
    index, the layer numbers and the rest of the name: longest pattern first (``lm_head.x`` is
    not ``lm_head`` with rest ``x`` when a ``lm_head.x`` module exists), then unfused before
    fused, then in the family's order."""
    found = []
    for order, module in enumerate(architecture.modules):
        fused = any(len(module.paths(c)) > 1 for c in module.names)
        for index, pattern in enumerate(module.paths(convention_name)):
            match = _regex(pattern).fullmatch(name)
            if match:
                numbers = tuple(match.groups()[:-1])
                found.append(((-len(pattern), fused, order), (module, index, numbers, match.group("rest") or "")))
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def _match(
    architecture: Architecture, convention_name: str, name: str
) -> tuple[ModuleMap, int, tuple[str, ...], str] | None:
    matches = _matches(architecture, convention_name, name)
    return matches[0] if matches else None


def _covers(architecture: Architecture, convention_name: str, names: list[str]) -> bool:
    return bool(names) and all(_match(architecture, convention_name, name) is not None for name in names)


def unmatched_names(names: Iterable[str], architecture: Architecture, convention_name: str) -> list[str]:
    """The names among ``names`` that no module of ``architecture`` matches in ``convention_name``."""
    return [name for name in names if _match(architecture, convention_name, name) is None]


def _no_map_message(architecture: Architecture, sources: list[str], name: str, manager: PluginManager | None) -> str:
    if len(sources) != 1:
        return (
            f"name {name!r} matches no module of architecture {architecture.name!r} in any of its conventions "
            f"{', '.join(sources)}"
        )
    label = _label(sources[0], manager)
    return (
        f"{label} name {name!r} matches no module of architecture {architecture.name!r} "
        f"({label} modules: {', '.join(p for m in architecture.modules for p in m.paths(sources[0]))})"
    )
