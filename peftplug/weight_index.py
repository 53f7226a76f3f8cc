"""Sharded weights: the ``*.index.json`` that maps each tensor to the file holding it."""

from __future__ import annotations

import json
from pathlib import Path


def index_shards(index: Path, error: type[Exception]) -> tuple[dict[str, str], list[Path]]:
    """The ``weight_map`` of ``index`` and the shard files it names, each a file in the index's
    own directory; ``error``, naming the index and what is wrong, otherwise (a name with a path
    in it would read a file elsewhere)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as problem:
        raise error(f"{index} is not a weights index (a JSON object with weight_map): {problem}") from problem
    outside = [name for name in shards if not isinstance(name, str) or Path(name).name != name]
    if outside:
        raise error(f"{index} names shards outside its directory: {outside[:3]}")
    for name in shards:
        if not (index.parent / name).is_file():
            raise error(f"{index} names {name}, which is not in {index.parent}")
    return weight_map, [index.parent / name for name in shards]
