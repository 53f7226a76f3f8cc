"""LoraConfig: HF PEFT's LoRA fields, names and defaults."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import ClassVar, Literal

from peftplug.config import AdapterConfig
from peftplug.errors import ConfigError
from peftplug.targets import pattern_value

STRING_INITS = ("gaussian", "pissa", "olora")


def is_known_init(init: str) -> bool:
    """True for the ``init_lora_weights`` strings peftplug implements (``pissa_niter_<N>`` included)."""
    return init in STRING_INITS or re.fullmatch(r"pissa_niter_[0-9]+", init) is not None


def uses_base_weight(init: object) -> bool:
    """True for the initialisations that take A and B from the base weight (PiSSA, OLoRA)."""
    return isinstance(init, str) and init != "gaussian"


def refuse_base_weight_init(init: object, module_name: str, why: str) -> None:
    """Raise the error naming ``init_lora_weights`` when ``init`` is PiSSA or OLoRA, which
    ``module_name`` cannot take (``why``); nothing has changed yet."""
    if uses_base_weight(init):
        raise ConfigError(
            "LoraConfig", "init_lora_weights", init, f"True, False or 'gaussian' for {module_name}: {why}"
        )


def refuse_base_weight_init_of_dtype(init: str, module_name: str, dtype: object, supported: bool) -> None:
    """The error of :func:`refuse_base_weight_init` for a weight whose ``dtype`` is not ``supported``."""
    if not supported:
        why = f"its {dtype} weight; PiSSA and OLoRA need float32, float16 or bfloat16 (initialise, then quantize)"
        refuse_base_weight_init(init, module_name, why)


@dataclasses.dataclass
class LoraConfig(AdapterConfig):
    """Low-rank adaptation: ``W x + (alpha / r) * B A x`` on each target module.

    Field names and defaults are HF PEFT's (``r=8``, ``lora_alpha=8``, ``lora_dropout=0.0``,
    ``bias="none"``, ...). ``target_modules`` is a list (exact name or dotted suffix), a regex
    string, ``"all-linear"``, or None for the model family's default. ``use_dora`` (DoRA: a
    learned magnitude per output row) runs on Linear layers (and GPT-2's Conv1D) on both backends.
    ``init_lora_weights``: True (A kaiming-uniform, B zeros), False, ``"gaussian"``, or, on Linear
    layers, ``"pissa"`` / ``"pissa_niter_<N>"`` / ``"olora"``, which take A and B from the base
    weight and leave the residual in it (:mod:`peftplug.plugins.lora.torch_base_weight_init`).
    """

    peft_type: ClassVar[str] = "LORA"
    hf_fields_at_default: ClassVar[dict] = {
        "lora_bias": False,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "trainable_token_indices": None,
        "loftq_config": {},
        "eva_config": None,
        "corda_config": None,
        "lora_ga_config": None,
        "velora_config": None,
        "alora_invocation_tokens": None,
        "use_qalora": False,
        "qalora_group_size": 16,
        "monteclora_config": None,
        "layer_replication": None,
        "runtime_config": {"ephemeral_gpu_offload": False},
        "target_parameters": None,
        "use_bdlora": None,
        "arrow_config": None,
        "kasa_config": None,
        "ensure_weight_tying": False,
    }

    r: int = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    lora_alpha: int | float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: list[str] | None = None
    init_lora_weights: bool | str = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] | None = dataclasses.field(default_factory=dict)
    alpha_pattern: dict[str, int | float] | None = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        """r and every rank_pattern value positive; dropout in [0, 1); a known initialisation;
        layer options consistent."""
        if self.r <= 0:
            self._fail("r", self.r, "a positive integer")
        if isinstance(self.init_lora_weights, str) and not is_known_init(self.init_lora_weights):
            self._fail(
                "init_lora_weights",
                self.init_lora_weights,
                "True, False, 'gaussian', 'pissa', 'pissa_niter_<iterations>' or 'olora' (HF PEFT's other "
                "initialisations, such as loftq, eva or corda, are not supported)",
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            self._fail("lora_dropout", self.lora_dropout, "a probability in [0, 1)")
        for key, rank in (self.rank_pattern or {}).items():
            if rank <= 0:
                self._fail("rank_pattern", {key: rank}, "positive ranks")
        if self.layers_pattern and self.layers_to_transform is None:
            self._fail("layers_pattern", self.layers_pattern, "only meaningful together with layers_to_transform")
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            self._fail("layers_to_transform", self.layers_to_transform, "not allowed when target_modules is a regex")

    def rank_and_alpha(self, module_name: str) -> tuple[int, float]:
        """(r, lora_alpha) for one module, after rank_pattern and alpha_pattern."""
        r = pattern_value(self.rank_pattern or {}, module_name, self.r)
        return r, pattern_value(self.alpha_pattern or {}, module_name, self.lora_alpha)

    def scaling(self, r: int, alpha: float) -> float:
        """``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r
