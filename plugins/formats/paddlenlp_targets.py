"""Target-module patterns between PaddleNLP (regexes, ``re.fullmatch``) and HF PEFT, losslessly.

PaddleNLP's ``target_modules`` is a list of regular expressions, each matched with ``fullmatch``
against full sublayer names. HF PEFT's is a list of names (an entry matches a module named
exactly so, or ending in ``.<entry>``) or one regex string (``fullmatch``). The mapping keeps
the selection exactly and reads back to the same value either way:

- HF list ``[n, ...]`` <-> PaddleNLP ``["(?:.*\\.)?" + re.escape(n), ...]`` (the regex matching
  exactly what the HF entry matches);
- any other PaddleNLP list: one entry ``r`` <-> HF string ``r``; several <-> HF string
  ``"(?:r1)|(?:r2)|..."``, split back at its top-level ``|``. (The one case that reads back
  differently: a single PaddleNLP regex that is itself of that form comes back split into its
  alternatives, which select the same modules.)
"""

from __future__ import annotations

import re

_SUFFIX_PREFIX = r"(?:.*\.)?"


def _unescape(pattern: str) -> str | None:
    """The literal that ``re.escape`` turned into ``pattern``, or None when it is not one."""
    literal, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern):
                return None
            literal.append(pattern[i + 1])
            i += 2
            continue
        if char in ".^$*+?{}[]|()":
            return None
        literal.append(char)
        i += 1
    text = "".join(literal)
    return text if re.escape(text) == pattern else None


def _structure(pattern: str) -> list[tuple[int, str, int]]:
    """``(index, char, depth before it)`` for each ``(``, ``)`` and ``|`` outside escapes and
    character classes."""
    found, depth, i, in_class = [], 0, 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A "]" right after "[" or "[^" is a literal, not the end of the class.
            skip = 2 if pattern[i + 1 : i + 3] == "^]" else 1 if pattern[i + 1 : i + 2] == "]" else 0
            i += skip
        elif char in "()|":
            found.append((i, char, depth))
            depth += {"(": 1, ")": -1, "|": 0}[char]
        i += 1
    return found


def _top_level_alternatives(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups, classes and escapes)."""
    cuts = [i for i, char, depth in _structure(pattern) if char == "|" and depth == 0]
    bounds = [-1, *cuts, len(pattern)]
    return [pattern[a + 1 : b] for a, b in zip(bounds, bounds[1:])]


def _unwrap_group(part: str) -> str | None:
    """``X`` when ``part`` is exactly one non-capturing group ``(?:X)``, else None."""
    if not (part.startswith("(?:") and part.endswith(")")):
        return None
    closes = [i for i, char, depth in _structure(part) if char == ")" and depth == 1]
    return part[3:-1] if closes and closes[0] == len(part) - 1 else None


def targets_from_paddlenlp(patterns: str | list[str]) -> str | list[str]:
    """HF PEFT's ``target_modules`` selecting exactly what PaddleNLP's ``patterns`` select."""
    if isinstance(patterns, str):
        patterns = [patterns]
    names = []
    for pattern in patterns:
        literal = _unescape(pattern[len(_SUFFIX_PREFIX) :]) if pattern.startswith(_SUFFIX_PREFIX) else None
        names.append(literal)
    if names and all(name is not None for name in names):
        return names
    if len(patterns) == 1:
        return patterns[0]
    return "|".join(f"(?:{pattern})" for pattern in patterns)


def targets_to_paddlenlp(targets: str | list[str]) -> list[str]:
    """PaddleNLP's ``target_modules`` selecting exactly what HF PEFT's ``targets`` select."""
    if isinstance(targets, list):
        return [_SUFFIX_PREFIX + re.escape(name) for name in targets]
    parts = _top_level_alternatives(targets)
    if len(parts) > 1:
        inner = [_unwrap_group(part) for part in parts]
        if all(part is not None for part in inner):
            return inner
    return [targets]


def exact_names_to_paddlenlp(names: list[str]) -> list[str]:
    """Regexes matching exactly the full module paths ``names``."""
    return [re.escape(name) for name in names]
