"""The one rule for adapter names, on every backend.

An adapter's name becomes a key of every adapted layer's parameter dicts and, on save, the
name of its subfolder (``save_pretrained(d)`` writes adapter ``x`` to ``d/x``). So a name is
what HF PEFT's users use in practice and what every file system takes as one folder name:
ASCII letters, digits, ``_`` and ``-``, 1 to 255 characters. Nothing else (a ``/``, ``..``, a
leading ``.``, a NUL byte, an empty name) can enter, so no save escapes its directory or
overwrites another adapter.
"""

from __future__ import annotations

import re

from peftplug.errors import ConfigError

_RULE = re.compile(r"[A-Za-z0-9_-]{1,255}")
RULE_TEXT = "ASCII letters, digits, '_' and '-' only, 1 to 255 characters (it names the adapter's folder on save)"


def check_adapter_name(name: object, where: str = "adapter_name") -> str:
    """``name`` when it follows the rule; else a :class:`ConfigError` naming it and the rule."""
    if not isinstance(name, str) or not _RULE.fullmatch(name):
        shown = name if not isinstance(name, str) or len(name) <= 80 else f"{name[:40]}...({len(name)} characters)"
        raise ConfigError("adapter name", where, shown, RULE_TEXT)
    return name
