"""PaddleNLP's PEFT API on peftplug: ``from peftplug.paddlenlp import LoRAConfig, LoRAModel``.

A PaddleNLP script moves to peftplug by changing its ``from paddlenlp.peft import ...`` line:
the classes here have ``paddlenlp.peft``'s names, signatures, defaults and behaviour, and are
built on peftplug's methods and formats. Each method plugin declares the names it adds here
(``Method.namespaces["paddlenlp"]``); they are imported the first time they are asked for, so
importing this module loads no framework and no plugin.
"""

from typing import Any

from peftplug.manager import get_plugin_manager

NAMESPACE = "paddlenlp"


def __getattr__(name: str) -> Any:
    """A name a method plugin declares for this namespace (``LoRAModel``, ...), imported now and kept."""
    exports = get_plugin_manager().method_exports(NAMESPACE)
    if name not in exports:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = exports[name]()
    return value


def __dir__() -> list[str]:
    """The module's names, those the method plugins declare for it included."""
    return sorted({*globals(), *get_plugin_manager().method_exports(NAMESPACE)})
