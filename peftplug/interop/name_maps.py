"""Names between Hugging Face transformers and PaddleNLP, from the registered architectures.

Pure functions, no framework imports: the conversion code and :mod:`peftplug.interop.weights` use them.

- :func:`architecture_for` picks a family: by name, by ``model_type`` (HF's or PaddleNLP's), or
  from parameter / module names (the family whose map covers them all, on one side).
- :func:`map_name` maps one module path or parameter name to the other library and says how the
  tensor changes (:class:`NameMatch`); :func:`to_paddle_name`, :func:`to_paddle_names`,
  :func:`to_hf_name`, :func:`to_hf_names` and :func:`transposes` are its short forms;
  :func:`map_name_candidates` lists every reading (plain or as part of a fused module).
- :func:`fused_part_sizes` and :func:`fused_output_order` place the parts of a fused
  projection on its output axis.
- :func:`prefix_block_order` reorders the ``2 * layers`` key/value blocks of a prefix cache.

A name is a module path (``model.layers.0.self_attn.q_proj``) or anything below one
(``model.layers.0.self_attn.q_proj.weight``, ``...q_proj.lora_A.weight``): the module part is
mapped, the rest is kept, and a parameter the family renames (Bloom's ``lm_head.weight`` <->
``lm_head.decoder_weight``) is renamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from peftplug.errors import PeftplugError, RegistryError
from peftplug.registration import Architecture, ModuleMap

if TYPE_CHECKING:
    from peftplug.manager import PluginManager

Side = Literal["hf", "paddle"]
SIDES: tuple[Side, ...] = ("hf", "paddle")


class NameMapError(PeftplugError, LookupError):
    """A name has no counterpart in the other library, or the family cannot be told."""


@dataclass(frozen=True)
class NameMatch:
    """Where a name lands in the other library, and what happens to its tensor.

    ``names``: the name(s) on the other side; several when the other library splits what this
    one fuses (GPT-2's ``c_attn`` -> ``q_proj``, ``k_proj``, ``v_proj``). ``part``: when the
    name is one of several parts the other side fuses, ``(index, count)``; else None. The
    module's ``layout`` says where the parts sit on the fused output axis
    (:func:`fused_output_order`). ``param``: the rest of the name below the module (``"weight"``, ``"lora_A.weight"``,
    ``""`` for the module itself). ``transpose``: the 2-D ``weight`` transposes between the two
    (a ``"linear"`` module's ``weight``). ``module``: the :class:`ModuleMap` that matched.
    """

    names: tuple[str, ...]
    part: tuple[int, int] | None
    param: str
    transpose: bool
    module: ModuleMap


def _manager(manager: PluginManager | None) -> PluginManager:
    if manager is not None:
        return manager
    from peftplug.manager import get_plugin_manager

    return get_plugin_manager()


def _known(manager: PluginManager, mapped_only: bool = False) -> str:
    names = sorted(a.name for a in manager.architectures if a.modules or not mapped_only)
    return ", ".join(names) or "none"


def architecture_for(
    architecture: str | Architecture | None = None,
    *,
    model_type: str | None = None,
    names: Iterable[str] | None = None,
    manager: PluginManager | None = None,
) -> Architecture:
    """The registered family for an explicit ``architecture`` (name or object), else a
    ``model_type`` (transformers' or PaddleNLP's), else ``names`` (module paths or parameter
    names all on one side, e.g. an adapter's keys without ``base_model.model.``).

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
            if model_type in candidate.model_types or model_type in candidate.paddle_model_types:
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
            f"HF <-> PaddleNLP module maps: {_known(manager, mapped_only=True)}; pass architecture= "
            f"or register a family with a plugin"
        )
    candidates = ", ".join(f"{name} ({' and '.join(sides)} names)" for name, (_, sides) in sorted(fits.items()))
    raise NameMapError(f"the names fit several architectures: {candidates}; pass architecture= to choose")


def fitting_architectures(
    names: Iterable[str], manager: PluginManager | None = None
) -> dict[str, tuple[Architecture, list[Side]]]:
    """The mapped families whose module map covers every one of ``names`` on one side or both:
    ``{name: (architecture, sides)}``."""
    names = list(names)
    fits = {
        a.name: (a, [s for s in SIDES if _covers(a, s, names)]) for a in _manager(manager).architectures if a.modules
    }
    return {name: fit for name, fit in fits.items() if fit[1]}


def side_of(names: Iterable[str], architecture: Architecture) -> Side:
    """``"hf"`` or ``"paddle"``: which library's names ``names`` are, for ``architecture``."""
    names = list(names)
    for side in SIDES:
        if _covers(architecture, side, names):
            return side
    raise NameMapError(
        f"architecture {architecture.name!r} maps neither as HF nor as PaddleNLP names: "
        f"{_first_unmatched(architecture, names)!r} (HF) / "
        f"{_first_unmatched(architecture, names, 'paddle')!r} (PaddleNLP) have no map"
    )


def map_name(name: str, architecture: Architecture, to: Side) -> NameMatch:
    """Map ``name`` (on the side other than ``to``) to the ``to`` side; see :class:`NameMatch`.

    Raises :class:`NameMapError` naming the name and the family when no module map matches.
    """
    if to not in SIDES:
        raise ValueError(f"to must be 'hf' or 'paddle', got {to!r}")
    matches = map_name_candidates(name, architecture, to)
    if not matches:
        source: Side = "paddle" if to == "hf" else "hf"
        raise NameMapError(_no_map_message(architecture, source, name))
    return matches[0]


def map_name_candidates(name: str, architecture: Architecture, to: Side) -> list[NameMatch]:
    """Every way ``name`` maps to the ``to`` side, the plain one first: HF Llama's ``q_proj``
    is PaddleNLP's ``q_proj``, or part 0 of ``qkv_proj`` when the Paddle model fuses q, k, v.
    Empty when no module map matches."""
    if to not in SIDES:
        raise ValueError(f"to must be 'hf' or 'paddle', got {to!r}")
    source: Side = "paddle" if to == "hf" else "hf"
    found = []
    for module, index, numbers, param in _matches(architecture, source, name):
        names = tuple(_fill(pattern, numbers) for pattern in _patterns(module, to))
        count = len(_patterns(module, source))
        renamed = _rename_param(module, param, to)
        hf_param = param if source == "hf" else renamed
        full = tuple(f"{n}.{renamed}" if renamed else n for n in names)
        part = (index, count) if count > 1 else None
        found.append(NameMatch(full, part, param, module.kind == "linear" and hf_param == "weight", module))
    return found


def to_paddle_names(hf_name: str, architecture: Architecture) -> tuple[str, ...]:
    """The PaddleNLP name(s) of an HF module path or parameter name (several for a fused
    module PaddleNLP splits)."""
    return map_name(hf_name, architecture, "paddle").names


def to_paddle_name(hf_name: str, architecture: Architecture) -> str:
    """The PaddleNLP name of an HF module path or parameter name; an HF module that PaddleNLP
    splits in parts raises (use :func:`to_paddle_names` or :func:`map_name`)."""
    match = map_name(hf_name, architecture, "paddle")
    if len(match.names) != 1:
        raise NameMapError(
            f"{hf_name!r} ({architecture.name}) is one fused module in HF and {len(match.names)} in PaddleNLP: "
            f"{', '.join(match.names)}; use to_paddle_names() or map_name()"
        )
    return match.names[0]


def to_hf_names(paddle_name: str, architecture: Architecture) -> tuple[str, ...]:
    """The HF name(s) of a PaddleNLP module path or parameter name (several for a module
    PaddleNLP fuses, e.g. Llama's ``qkv_proj``)."""
    return map_name(paddle_name, architecture, "hf").names


def to_hf_name(paddle_name: str, architecture: Architecture) -> str:
    """The HF name of a PaddleNLP module path or parameter name (for a part of a module HF
    fuses, the fused module: :func:`map_name` tells which part); a PaddleNLP module that HF
    keeps in parts raises (use :func:`to_hf_names`)."""
    match = map_name(paddle_name, architecture, "hf")
    if len(match.names) != 1:
        raise NameMapError(
            f"{paddle_name!r} ({architecture.name}) is one fused module in PaddleNLP and {len(match.names)} in HF: "
            f"{', '.join(match.names)}; use to_hf_names() or map_name()"
        )
    return match.names[0]


def transposes(name: str, architecture: Architecture, side: Side = "hf") -> bool:
    """Whether the tensor called ``name`` (an HF name, or a PaddleNLP one with
    ``side="paddle"``) is transposed between the two libraries: a ``"linear"`` module's weight."""
    other: Side = "paddle" if side == "hf" else "hf"
    return map_name(name, architecture, other).transpose


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
def _patterns(module: ModuleMap, side: Side) -> tuple[str, ...]:
    value = module.hf if side == "hf" else module.paddle
    return (value,) if isinstance(value, str) else tuple(value)


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    body = r"\.".join(r"(\d+)" if part == "{n}" else re.escape(part) for part in pattern.split("."))
    return re.compile(rf"{body}(?:\.(?P<rest>.+))?")


def _fill(pattern: str, numbers: tuple[str, ...]) -> str:
    values = iter(numbers)
    return ".".join(next(values) if part == "{n}" else part for part in pattern.split("."))


def _matches(architecture: Architecture, side: Side, name: str) -> list[tuple[ModuleMap, int, tuple[str, ...], str]]:
    """The module maps whose ``side`` pattern matches ``name``, with the pattern's index, the
    layer numbers and the rest of the name: longest pattern first (``lm_head.x`` is not
    ``lm_head`` with rest ``x`` when a ``lm_head.x`` module exists), then unfused before fused,
    then in the family's order."""
    found = []
    for order, module in enumerate(architecture.modules):
        fused = len(_patterns(module, "hf")) + len(_patterns(module, "paddle")) > 2
        for index, pattern in enumerate(_patterns(module, side)):
            match = _regex(pattern).fullmatch(name)
            if match:
                numbers = tuple(match.groups()[:-1])
                found.append(((-len(pattern), fused, order), (module, index, numbers, match.group("rest") or "")))
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def _match(architecture: Architecture, side: Side, name: str) -> tuple[ModuleMap, int, tuple[str, ...], str] | None:
    matches = _matches(architecture, side, name)
    return matches[0] if matches else None


def _rename_param(module: ModuleMap, param: str, to: Side) -> str:
    renames = dict(module.params) if to == "paddle" else {v: k for k, v in module.params.items()}
    return renames.get(param, param)


def _covers(architecture: Architecture, side: Side, names: list[str]) -> bool:
    return bool(names) and all(_match(architecture, side, name) is not None for name in names)


def _first_unmatched(architecture: Architecture, names: list[str], side: Side = "hf") -> str | None:
    return next((name for name in names if _match(architecture, side, name) is None), None)


def _no_map_message(architecture: Architecture, side: Side, name: str) -> str:
    library = "HF transformers" if side == "hf" else "PaddleNLP"
    if not architecture.modules:
        return (
            f"architecture {architecture.name!r} has no HF <-> PaddleNLP module map; "
            f"families with one: {_known(_manager(None), mapped_only=True)}"
        )
    return (
        f"{library} name {name!r} matches no module of architecture {architecture.name!r} "
        f"({library} modules: {', '.join(p for m in architecture.modules for p in _patterns(m, side))})"
    )
