"""peftplug: parameter-efficient fine-tuning where every method and every framework is a plugin.

``import peftplug`` imports neither torch nor paddle: a framework is imported when a model of
it is first used.
"""

from peftplug.config import AdapterConfig, PromptLearningConfig, config_from_dict
from peftplug.interop.convert import convert
from peftplug.manager import get_plugin_manager
from peftplug.markers import hookimpl, hookspec
from peftplug.model.api import get_peft_model
from peftplug.model.kbit import prepare_model_for_kbit_training
from peftplug.model.peft_model import PeftModel
from peftplug.plugins.ia3.config import IA3Config
from peftplug.plugins.lora.config import LoraConfig
from peftplug.plugins.p_tuning.config import PromptEncoderConfig, PromptEncoderReparameterizationType
from peftplug.plugins.prefix_tuning.config import PrefixTuningConfig
from peftplug.plugins.prompt_tuning.config import PromptTuningConfig, PromptTuningInit

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
