"""peftplug: parameter-efficient fine-tuning where every method and every framework is a plugin.

``import peftplug`` imports neither torch nor paddle: a framework is imported when a model of
it is first used. Nor does it import a plugin: the built-in methods' configs (``LoraConfig``,
...) are imported the first time they are asked for (:mod:`peftplug.plugin_exports`).
"""

from typing import Any

from peftplug.config import AdapterConfig, PromptLearningConfig, config_from_dict
from peftplug.interop.convert import convert
from peftplug.manager import get_plugin_manager
from peftplug.markers import hookimpl, hookspec
from peftplug.model.api import get_peft_model
from peftplug.model.kbit import prepare_model_for_kbit_training
from peftplug.model.peft_model import PeftModel
from peftplug.plugin_exports import PLUGIN_EXPORTS
from peftplug.registration import load_declared

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
    """A public name that a built-in plugin defines (``LoraConfig``, ...), imported now and kept."""
    if name not in PLUGIN_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = load_declared(PLUGIN_EXPORTS[name], __name__)
    return value


def __dir__() -> list[str]:
    """The module's names, those imported on first use included."""
    return sorted({*globals(), *PLUGIN_EXPORTS})
