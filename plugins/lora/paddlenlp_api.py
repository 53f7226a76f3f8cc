"""PaddleNLP's LoRA API (``paddlenlp.peft.LoRAConfig`` / ``LoRAModel``) on peftplug's LoRA.

``LoRAConfig`` has PaddleNLP 2.8's fields and defaults and reads and writes ``lora_config.json``
as PaddleNLP does. ``LoRAModel(model, lora_config)`` builds the class of the model's framework
(:mod:`peftplug.plugins.lora.paddlenlp_paddle` for Paddle). What peftplug does not implement is
refused by field, before the model is touched: PiSSA, LoRA+ (``lora_plus_scale``), quantisation-
aware training (``do_qat``), merged QKV layers (``enable_lora_list``), ``target_modules=None``
and a ``dtype`` other than float32. ``use_quick_lora`` and ``head_dim`` change no result and are
kept as given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from peftplug.errors import ConfigError
from peftplug.interop.paddlenlp_config_file import PaddleNLPConfigFile
from peftplug.model.backend_dispatch import DispatchesOnBackend, forward_to_backend
from peftplug.plugins.formats.paddlenlp_targets import targets_from_paddlenlp
from peftplug.plugins.lora.config import LoraConfig

# trainable_bias (PaddleNLP) -> bias (HF PEFT, peftplug)
BIAS_MODES = {None: "none", "lora": "lora_only", "all": "all"}
# field -> (the only value peftplug accepts, the feature a different value asks for)
UNSUPPORTED = {
    "pissa": (False, "PiSSA (it rewrites the base weights from their SVD)"),
    "lora_plus_scale": (1.0, "LoRA+ (a separate learning rate for lora_B)"),
    "do_qat": (False, "quantisation-aware training"),
    "enable_lora_list": (None, "merged QKV LoRA layers (LoRAMergedLinear)"),
}
ADAPTER_DTYPE = "float32"


@dataclass
class LoRAConfig(PaddleNLPConfigFile):
    """PaddleNLP 2.8's ``LoRAConfig``: the same fields, defaults, ``scaling`` and files.

    ``target_modules`` are regular expressions matched with ``fullmatch`` against sublayer
    names; ``trainable_modules`` against parameter names; ``trainable_bias`` is None, ``"lora"``
    (biases of LoRA layers) or ``"all"``.
    """

    file_name: ClassVar[str] = "lora_config.json"
    computed: ClassVar[tuple[str, ...]] = ("scaling",)

    r: int = 8
    target_modules: list[str] | str | None = None
    trainable_modules: list[str] | None = None
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    merge_weights: bool = False
    trainable_bias: str | None = None
    enable_lora_list: list[Any] | None = None
    tensor_parallel_degree: int = -1
    dtype: str | None = None
    head_dim: int | None = None
    do_qat: bool = False
    rslora: bool = False
    pissa: bool = False
    lora_plus_scale: float = 1.0
    base_model_name_or_path: str | None = None
    use_quick_lora: bool = False

    def __post_init__(self) -> None:
        # PaddleNLP: quick LoRA only without dropout (it warns and turns it off).
        if self.use_quick_lora and self.lora_dropout > 0:
            self.use_quick_lora = False

    @property
    def scaling(self) -> float:
        """``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA; 1 with PiSSA), as PaddleNLP computes it."""
        if self.pissa:
            return 1.0
        return self.lora_alpha / math.sqrt(self.r) if self.rslora else self.lora_alpha / self.r

    def check_supported(self) -> None:
        """Refuse, naming the field, what peftplug's LoRA does not implement."""
        for field, (accepted, feature) in UNSUPPORTED.items():
            value = getattr(self, field)
            if value != accepted and value is not None:
                raise _refused(field, value, f"peftplug does not implement {feature}; only {accepted!r} is accepted")
        if self.target_modules is None:
            raise _refused(
                "target_modules", None, "regexes naming the layers to adapt (PaddleNLP adds no LoRA layer without them)"
            )
        if self.trainable_bias not in BIAS_MODES:
            raise _refused("trainable_bias", self.trainable_bias, "None, 'lora' or 'all'")
        if self.dtype not in (None, ADAPTER_DTYPE):
            raise _refused("dtype", self.dtype, f"None or {ADAPTER_DTYPE!r}: peftplug keeps LoRA weights in float32")
        if isinstance(self.trainable_modules, str):
            raise _refused("trainable_modules", self.trainable_modules, "a list of regexes (or None)")
        for field in ("target_modules", "trainable_modules"):
            value = getattr(self, field)
            for pattern in [value] if isinstance(value, str) else value or []:
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as error:
                    raise _refused(field, value, f"regular expressions; {pattern!r} is not one ({error})") from None

    def to_peftplug(self) -> LoraConfig:
        """peftplug's :class:`LoraConfig` for the same adapter (targets keep their selection)."""
        targets = [self.target_modules] if isinstance(self.target_modules, str) else list(self.target_modules or [])
        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets_from_paddlenlp(targets),
            bias=BIAS_MODES[self.trainable_bias],
            use_rslora=self.rslora,
            base_model_name_or_path=self.base_model_name_or_path,
        )


def as_lora_config(config: Any) -> LoRAConfig:
    """``config`` as peftplug's LoRAConfig (PaddleNLP's own is taken field by field)."""
    return LoRAConfig.coerce(config, "LoRAModel", "lora_config")


def _refused(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError("peftplug.paddlenlp.LoRAConfig", field, value, allowed)


class LoRAModel(metaclass=DispatchesOnBackend):
    """PaddleNLP's ``LoRAModel(model, lora_config)``: LoRA on ``model``, built by peftplug.

    Calling it gives the class of the model's framework; ``isinstance(x, LoRAModel)`` holds for
    it, and on Paddle so does ``isinstance(x, paddlenlp.peft.LoRAModel)`` (what PaddleNLP's
    ``Trainer`` checks to save LoRA files in its checkpoints).
    """

    implementations: ClassVar[dict[str, str]] = {
        "paddle": "peftplug.plugins.lora.paddlenlp_paddle:PaddleLoRAModel",
        "torch": "peftplug.plugins.lora.paddlenlp_torch:TorchLoRAModel",
    }
    from_pretrained = forward_to_backend("from_pretrained")
