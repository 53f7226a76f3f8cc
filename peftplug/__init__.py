"""peftplug: parameter-efficient fine-tuning where every method and every framework is a plugin.

``import peftplug`` imports neither torch nor paddle: a framework is imported when a model of
it is first used. Nor does it import a plugin: a method's config class (``LoraConfig``, ...) and
the names it declares (``Method.exports``) are found through the plugin manager the first time
they are asked for.
"""

from typing import Any

from peftplug.config import AdapterConfig, PromptLearningConfig, config_from_dict
from peftplug.interop.convert import convert
from peftplug.manager import get_plugin_manager
from peftplug.markers import hookimpl, hookspec
from peftplug.model.api import get_peft_model
from peftplug.model.kbit import prepare_model_for_kbit_training
from peftplug.model.peft_model import PeftModel

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "IA3Config",
    "LoraConfig",
    "PeftModel",
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "PromptEncoderReparameterizationType",
    "PromptLearningConfig",
    "PromptTuningConfig",
    "PromptTuningInit",
    "config_from_dict",
    "convert",
    "get_peft_model",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "prepare_model_for_kbit_training",
]


def __getattr__(name: str) -> Any:
    """A public name that a method plugin defines (``LoraConfig``, ...), imported now and kept."""
    exports = get_plugin_manager().method_exports()
    if name not in exports:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = exports[name]()
    return value


def __dir__() -> list[str]:
    """The module's names, those the method plugins define included."""
    return sorted({*globals(), *get_plugin_manager().method_exports()})
