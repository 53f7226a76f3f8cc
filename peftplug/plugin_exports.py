"""The public names of ``peftplug`` that built-in plugins define: the built-in methods' configs.

Each maps to the ``"module:attribute"`` that defines it. ``peftplug/__init__.py`` imports one the
first time it is asked for (PEP 562), so ``import peftplug`` imports no plugin module and
``from peftplug import LoraConfig`` imports LoRA's config module only.
"""

from __future__ import annotations

from collections.abc import Mapping

PLUGIN_EXPORTS: Mapping[str, str] = {
    "IA3Config": "peftplug.plugins.ia3.config:IA3Config",
    "LoraConfig": "peftplug.plugins.lora.config:LoraConfig",
    "PrefixTuningConfig": "peftplug.plugins.prefix_tuning.config:PrefixTuningConfig",
    "PromptEncoderConfig": "peftplug.plugins.p_tuning.config:PromptEncoderConfig",
    "PromptEncoderReparameterizationType": "peftplug.plugins.p_tuning.config:PromptEncoderReparameterizationType",
    "PromptTuningConfig": "peftplug.plugins.prompt_tuning.config:PromptTuningConfig",
    "PromptTuningInit": "peftplug.plugins.prompt_tuning.config:PromptTuningInit",
}
