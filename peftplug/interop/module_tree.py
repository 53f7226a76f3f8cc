"""An adapter's tensors moved between the module trees of two naming conventions (HF
transformers', PaddleNLP's, or any other a family maps).

Keys are canonical (:class:`~peftplug.state.AdapterState`: HF PEFT's names and layout) in every
convention; what changes is the module path (``model.layers.0`` <-> ``llama.layers.0``, from the
architecture plugin's maps) and, for tensors kept in the framework's own layout (copies of
``modules_to_save`` Linear layers), the transpose. Modules one side fuses and the other keeps
apart go through :mod:`peftplug.interop.fused`. ``target_modules``, IA3's
``feedforward_modules`` and ``modules_to_save`` are mapped too (:func:`map_module_names`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from peftplug.errors import PeftplugError
from peftplug.interop.name_maps import NameMatch, library_of, map_name_candidates, side_of
from peftplug.registration import Architecture, ModuleMap

if TYPE_CHECKING:
    from peftplug.manager import PluginManager

LAYER_PREFIX = "base_model.model."
PROMPT_PREFIX = "base_model."


class ConversionError(PeftplugError, ValueError):
    """An adapter cannot be converted: a tensor with no counterpart, or shapes that do not fit."""


@dataclass
class Routed:
    """The tensors of a state sorted by what happens to them on the way to the other tree."""

    plain: dict[str, np.ndarray] = field(default_factory=dict)
    # source module path -> (match, {param: array}) for a module the target splits
    splits: dict[str, tuple[NameMatch, dict[str, np.ndarray]]] = field(default_factory=dict)
    # target module path -> (match of part 0.., {part index: {param: array}}) for a module the target fuses
    fuses: dict[str, tuple[NameMatch, dict[int, dict[str, np.ndarray]]]] = field(default_factory=dict)
    # source module path -> target module path(s)
    modules: dict[str, tuple[str, ...]] = field(default_factory=dict)


def prefix_for(is_prompt: bool) -> str:
    """The key prefix of module tensors: ``base_model.model.`` (layer methods) or ``base_model.``."""
    return PROMPT_PREFIX if is_prompt else LAYER_PREFIX


def module_keys(tensors: dict[str, np.ndarray], prefix: str) -> list[str]:
    """The names (prefix stripped) of the tensors that belong to modules of the model."""
    return [key[len(prefix) :] for key in tensors if key.startswith(prefix)]


def tree_side(names: list[str], architecture: Architecture, manager: PluginManager | None = None) -> str:
    """Which convention's module tree ``names`` are in."""
    return side_of(representatives(names), architecture, manager)


def route(
    tensors: dict[str, np.ndarray],
    prefix: str,
    architecture: Architecture,
    source: str,
    to: str,
    use_fused: Callable[[ModuleMap], bool],
    manager: PluginManager | None = None,
) -> Routed:
    """Map every tensor under ``prefix`` from the ``source`` convention's tree to the ``to``
    tree; other keys (``prompt_embeddings``) pass unchanged. Raises :class:`ConversionError`
    naming the first tensor without counterpart."""
    routed = Routed()
    for key, value in tensors.items():
        if not key.startswith(prefix):
            routed.plain[key] = value
            continue
        name = key[len(prefix) :]
        candidates = candidates_of(name, architecture, source, to, manager)
        match = next((m for m in candidates if m.part is not None and use_fused(m.module)), None)
        match = match or next((m for m in candidates if m.part is None), None) or next(iter(candidates), None)
        if match is None:
            raise ConversionError(
                f"tensor {key!r}: its module has no counterpart in {library_of(to, manager)} for architecture "
                f"{architecture.name!r} (it is not a {library_of(source, manager)} module the family's map knows)"
            )
        module, targets = _module_of(name, match), tuple(_module_of(n, match) for n in match.names)
        if match.part is not None:
            entry = routed.fuses.setdefault(targets[0], (match, {}))
            entry[1].setdefault(match.part[0], {})[match.param] = value
            routed.modules[module] = targets
        elif len(match.names) > 1:
            routed.splits.setdefault(module, (match, {}))[1][match.param] = value
            routed.modules[module] = targets
        else:
            routed.plain[prefix + match.names[0]] = np.ascontiguousarray(value.T) if match.transpose else value
            routed.modules[module] = targets
    return routed


_NUMBER = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")
_SENTINEL = 987650000


def candidates_of(
    name: str, architecture: Architecture, source: str, to: str, manager: PluginManager | None = None
) -> list[NameMatch]:
    """:func:`map_name_candidates`, computed once per name shape: the layer numbers of ``name``
    are swapped for sentinels, the shape's candidates cached, the numbers put back (an adapter
    of a 32-layer model has 32 names of each shape)."""
    numbers = _NUMBER.findall(name)
    sentinels = [str(_SENTINEL + i) for i in range(len(numbers))]
    replacements = iter(sentinels)
    template = _NUMBER.sub(lambda _: next(replacements), name)
    cached = _cached_candidates(template, architecture, source, to, manager)
    if not numbers:
        return cached
    result = []
    for match in cached:
        names = []
        for other in match.names:
            for sentinel, number in zip(sentinels, numbers):
                other = other.replace(sentinel, number)
            names.append(other)
        result.append(dataclasses.replace(match, names=tuple(names)))
    return result


_CACHE: dict[tuple[int, int, str, str, str], tuple[Architecture, PluginManager | None, list[NameMatch]]] = {}


def _cached_candidates(
    template: str, architecture: Architecture, source: str, to: str, manager: PluginManager | None
) -> list[NameMatch]:
    key = (id(architecture), id(manager), template, source, to)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not architecture or hit[1] is not manager:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        matches = map_name_candidates(template, architecture, to, source, manager=manager)
        hit = _CACHE[key] = (architecture, manager, matches)
    return hit[2]


def representatives(names: list[str]) -> list[str]:
    """One name per name shape (layer numbers aside): enough to tell a family or a convention."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(_NUMBER.sub("0", name), name)
    return list(seen.values())


def _module_of(name: str, match: NameMatch) -> str:
    return name[: -len(match.param) - 1] if match.param else name


def map_module_names(
    entries: list[str] | str | None,
    selected: list[str],
    modules: dict[str, tuple[str, ...]],
    architecture: Architecture,
    to: str,
    present: set[str] | None = None,
) -> list[str] | str | None:
    """``target_modules``-style ``entries`` for the ``to`` tree, selecting exactly the mapped
    ``selected`` source modules (those of their targets in ``present``, when given). A list of
    suffixes maps entry by entry, in order (``q_proj`` -> ``q_proj``, or ``qkv_proj`` when the
    target fuses); when a suffix would pick a layer number or another module of the family too,
    or ``entries`` is a regex, the result is the list of full module paths (exact)."""
    if entries is None:
        return None

    def targets_of(module: str) -> list[str]:
        return [t for t in modules.get(module, (module,)) if present is None or t in present]

    wanted = sorted({target for module in selected for target in targets_of(module)})
    if not isinstance(entries, list) or not wanted:
        return wanted or entries
    suffixes: list[str] = []
    for entry in entries:
        depth = entry.count(".") + 1
        for module in selected:
            if not (module == entry or module.endswith("." + entry)):
                continue
            for target in targets_of(module):
                suffix = ".".join(target.split(".")[-depth:])
                if any(part.isdigit() for part in suffix.split(".")):
                    return wanted
                if suffix not in suffixes:
                    suffixes.append(suffix)
    if any(not any(m == e or m.endswith("." + e) for e in entries) for m in selected):
        return wanted
    if _selects(set(suffixes), architecture, to, wanted) != set(wanted):
        return wanted
    return suffixes


def _selects(suffixes: set[str], architecture: Architecture, convention: str, wanted: list[str]) -> set[str]:
    """The modules of the family (at the layer numbers ``wanted`` uses) that ``suffixes`` select."""
    numbers = sorted({m.group(0) for name in wanted for m in re.finditer(r"(?<=\.)\d+(?=\.)", name)})
    chosen = set()
    for module in architecture.modules:
        for pattern in module.paths(convention):
            names = [pattern.replace("{n}", n) for n in numbers] if "{n}" in pattern else [pattern]
            chosen.update(n for n in names if any(n == s or n.endswith("." + s) for s in suffixes))
    return chosen
