"""HF PEFT's two string enums: ``TaskType`` (fixed by HF PEFT) and ``PeftType`` (one member per
registered method, so a third-party method is a member too and the core names none)."""

from __future__ import annotations

import enum
import functools

from peftplug.config import TASK_TYPES

TaskType = enum.Enum("TaskType", {name: name for name in TASK_TYPES}, type=str, module=__name__)
TaskType.__doc__ = """The task types of HF PEFT's ``TaskType``: str members equal to their names (``TaskType.CAUSAL_LM
== "CAUSAL_LM"``), accepted wherever a config takes ``task_type``."""


def peft_type_enum() -> type[enum.Enum]:
    """HF PEFT's ``PeftType`` for the methods registered now: a str enum whose members are the
    methods' ``peft_type`` strings (``PeftType.LORA == "LORA"``, equal to HF PEFT's member too)."""
    from peftplug.manager import get_plugin_manager

    return _peft_type_enum(tuple(method.peft_type for method in get_plugin_manager().methods))


@functools.lru_cache(maxsize=8)
def _peft_type_enum(peft_types: tuple[str, ...]) -> type[enum.Enum]:
    members = enum.Enum("PeftType", {name: name for name in peft_types}, type=str, module=__name__)
    members.__doc__ = "The registered methods' ``peft_type`` strings, as HF PEFT's ``PeftType`` members."
    return members
