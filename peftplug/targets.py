"""Which modules of a model an adapter targets, by HF PEFT's matching rules."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from peftplug.errors import TargetModulesError

ALL_LINEAR = "all-linear"


def matches_target(name: str, targets: str | Sequence[str]) -> bool:
    """True when module ``name`` is a target.

    A string is a regular expression matched against the whole dotted name; a list matches a
    name exactly or as a dotted suffix (``"q_proj"`` matches ``"model.layers.0.self_attn.q_proj"``).
    """
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name in targets or any(name.endswith(f".{target}") for target in targets)


def layer_index(name: str, layers_pattern: str | Sequence[str] | None) -> int | None:
    """The transformer-block index in ``name`` (``model.layers.3.mlp`` -> 3), or None."""
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern or [])
    if not patterns:
        found = re.match(r".*\.[^.]*\.(\d+)\.", name)
        return int(found.group(1)) if found else None
    for pattern in patterns:
        found = re.match(rf".*\.{pattern}\.(\d+)\.", name)
        if found:
            return int(found.group(1))
    return None


def in_layers(name: str, layers_to_transform: int | list[int] | None, layers_pattern) -> bool:
    """True when ``name`` lies in one of ``layers_to_transform`` (always True when unset)."""
    if layers_to_transform is None or layers_to_transform == []:
        return True
    index = layer_index(name, layers_pattern)
    if index is None:
        return False
    if isinstance(layers_to_transform, int):
        return index == layers_to_transform
    return index in layers_to_transform


def is_excluded(name: str, exclude: str | Sequence[str] | None) -> bool:
    """True when ``name`` is matched by ``exclude_modules`` (same rules as targets)."""
    return bool(exclude) and matches_target(name, exclude)


def pattern_value(patterns: dict[str, object], name: str, default):
    """The value of the first key of ``patterns`` (rank_pattern, alpha_pattern) matching ``name``.

    A key matches as HF PEFT's ``get_pattern_key`` does: the whole name, or a regex matching a
    dotted suffix of it.
    """
    for key, value in patterns.items():
        if key == name or re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def select_targets(
    names: Iterable[str],
    targets: str | Sequence[str],
    *,
    exclude: str | Sequence[str] | None = None,
    layers_to_transform: int | list[int] | None = None,
    layers_pattern: str | Sequence[str] | None = None,
) -> list[str]:
    """The module names that the config targets, in model order; an error if there are none.

    The error repeats the patterns and lists the model's module names that come closest, so a
    typo (``"q_prj"``) or a name from another model family shows at once.
    """
    names = list(names)
    chosen = [
        name
        for name in names
        if name
        and matches_target(name, targets)
        and not is_excluded(name, exclude)
        and in_layers(name, layers_to_transform, layers_pattern)
    ]
    if chosen:
        return chosen
    raise TargetModulesError(no_match_message(names, targets, layers_to_transform))


def no_match_message(names: Sequence[str], targets: str | Sequence[str], layers_to_transform=None) -> str:
    """Explain that ``targets`` matched no module and list the closest module names."""
    leaves = sorted({leaf for name in names if name and not (leaf := name.rsplit(".", 1)[-1]).isdigit()})
    wanted = [targets] if isinstance(targets, str) else list(targets)
    similar: list[str] = []
    for target in wanted:
        leaf = target.rsplit(".", 1)[-1]
        similar += [s for s in difflib.get_close_matches(leaf, leaves, n=4, cutoff=0.5) if s not in similar]
    shown = similar or leaves[:12]
    where = f" within layers {layers_to_transform}" if layers_to_transform not in (None, []) else ""
    return (
        f"target_modules {targets!r} matched no module of the base model{where}. "
        f"{'Similar' if similar else 'Some'} module names in the model: {', '.join(shown)}"
    )
