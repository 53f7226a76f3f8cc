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
from peftplug.model.auto import (
    AutoPeftModel,
    AutoPeftModelForCausalLM,
    AutoPeftModelForFeatureExtraction,
    AutoPeftModelForQuestionAnswering,
    AutoPeftModelForSeq2SeqLM,
    AutoPeftModelForSequenceClassification,
    AutoPeftModelForTokenClassification,
)
from peftplug.model.enums import TaskType, peft_type_enum
from peftplug.model.inject import inject_adapter_in_model
from peftplug.model.kbit import prepare_model_for_kbit_training
from peftplug.model.peft_model import PeftModel
from peftplug.model.state_dict import get_peft_model_state_dict, set_peft_model_state_dict
from peftplug.model.task_models import (
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
)

# HF PEFT's names for peftplug's: its config base class and its dict-to-config function.
PeftConfig = AdapterConfig
get_peft_config = config_from_dict

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "AutoPeftModel",
    "AutoPeftModelForCausalLM",
    "AutoPeftModelForFeatureExtraction",
    "AutoPeftModelForQuestionAnswering",
    "AutoPeftModelForSeq2SeqLM",
    "AutoPeftModelForSequenceClassification",
    "AutoPeftModelForTokenClassification",
    "IA3Config",
    "LoraConfig",
    "PeftConfig",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction",
    "PeftModelForQuestionAnswering",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PeftType",
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "PromptEncoderReparameterizationType",
    "PromptLearningConfig",
    "PromptTuningConfig",
    "PromptTuningInit",
    "TaskType",
    "config_from_dict",
    "convert",
    "get_peft_config",
    "get_peft_model",
    "get_peft_model_state_dict",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "inject_adapter_in_model",
    "prepare_model_for_kbit_training",
    "set_peft_model_state_dict",
]


def __getattr__(name: str) -> Any:
    """A public name that a method plugin defines (``LoraConfig``, ...), imported now and kept;
    ``PeftType``, made from the methods registered now (not kept: plugins may change)."""
    if name == "PeftType":
        return peft_type_enum()
    exports = get_plugin_manager().method_exports()
    if name not in exports:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = exports[name]()
    return value


def __dir__() -> list[str]:
    """The module's names, those the method plugins define included."""
    return sorted({*globals(), "PeftType", *get_plugin_manager().method_exports()})
