"""Reading a recipe file (YAML, JSON or TOML) into plain data plus the line of every field.

The lines let validation errors say ``recipe.yaml, line 7: ...``: YAML and JSON files get them
from PyYAML's node marks (JSON is read by :mod:`json`, then composed by PyYAML for the lines
alone); TOML files are read by :mod:`tomllib`, which gives no lines. Pure Python: no framework.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftplug.errors import PeftplugError

SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}

FieldPath = tuple  # ("method", "r") or ("model", "config", "hidden_size")


class RecipeError(PeftplugError, ValueError):
    """A recipe is malformed or asks for something unavailable; the one-line message names the
    file, the line where known, the field, its value and what is allowed."""


@dataclass
class RecipeSource:
    """A recipe's data, where it came from, and the 1-based line of each field path."""

    data: dict[str, Any]
    origin: str
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def where(self, path: FieldPath) -> str:
        """``"<origin>, line N"`` for the nearest field on ``path`` with a known line."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return f"{self.origin}, line {line}"
        return self.origin


def read_recipe_file(path: str | Path) -> RecipeSource:
    """Parse the recipe at ``path``; the format comes from its suffix (.yaml/.yml/.json/.toml).

    Raises :class:`RecipeError` for a missing file, an unknown suffix, a syntax error (with its
    line), a duplicate key, or a top level that is not a mapping.
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise RecipeError(f"recipe {path}: unknown file type {path.suffix!r}; allowed: {', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"cannot read recipe {path}: {error}") from None
    return parse_recipe_text(text, str(path), kind)


def parse_recipe_text(text: str, origin: str, kind: str = "yaml") -> RecipeSource:
    """Parse recipe ``text`` of ``kind`` (``yaml``, ``json`` or ``toml``); see :func:`read_recipe_file`."""
    if kind == "toml":
        data, lines = _parse_toml(text, origin), {}
    elif kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecipeError(f"{origin}, line {error.lineno}: not valid JSON ({error.msg})") from None
        lines = _yaml_lines(text, origin, strict=False)
    else:
        data, lines = _parse_yaml(text, origin)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{origin}: a recipe is a mapping of sections (backend, model, method, ...), got {type(data).__name__}"
        )
    return RecipeSource(data, origin, lines)


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise RecipeError(
                f"{origin}: reading TOML recipes on Python 3.10 needs tomli (pip install tomli)"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{origin}: not valid TOML ({error})") from None


def _parse_yaml(text: str, origin: str) -> tuple[Any, dict[FieldPath, int]]:
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{origin}, line {mark.line + 1}" if mark is not None else origin
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError(f"{where}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()
    lines: dict[FieldPath, int] = {}
    if node is not None:
        _walk(node, (), lines, origin, strict=True)
    return data, lines


def _yaml_lines(text: str, origin: str, strict: bool) -> dict[FieldPath, int]:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[FieldPath, int] = {}
    if node is not None:
        _walk(node, (), lines, origin, strict)
    return lines


def _walk(node: Any, prefix: FieldPath, lines: dict[FieldPath, int], origin: str, strict: bool) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            path = prefix + (key,)
            if strict and path in lines:
                dotted = ".".join(str(p) for p in path)
                raise RecipeError(
                    f"{origin}, line {key_node.start_mark.line + 1}: {dotted} is given twice "
                    f"(first on line {lines[path]}); keep one"
                )
            lines[path] = key_node.start_mark.line + 1
            _walk(value_node, path, lines, origin, strict)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[prefix + (index,)] = item.start_mark.line + 1
            _walk(item, prefix + (index,), lines, origin, strict)
