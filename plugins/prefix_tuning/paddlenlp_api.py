"""PaddleNLP's prefix-tuning API (``paddlenlp.peft.PrefixConfig`` / ``PrefixModelForCausalLM``)
on peftplug's prefix tuning.

``PrefixConfig`` has PaddleNLP 2.8's fields and defaults and reads and writes
``prefix_config.json`` as PaddleNLP does. ``PrefixModelForCausalLM(model, prefix_config, ...)``
builds the class of the model's framework (:mod:`peftplug.plugins.prefix_tuning.paddlenlp_paddle`
for Paddle). Refused by field, before the model is touched: ``prefix_dropout`` other than 0
(peftplug's prefix encoder has no dropout), a ``dtype`` other than float32, missing shape fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from peftplug.errors import ConfigError
from peftplug.interop.paddlenlp_config_file import PaddleNLPConfigFile
from peftplug.model.backend_dispatch import DispatchesOnBackend, forward_to_backend
from peftplug.plugins.prefix_tuning.config import PrefixTuningConfig
from peftplug.plugins.prefix_tuning.paddlenlp_codec import config_from_paddlenlp

ENCODER_DTYPE = "float32"
SHAPE_FIELDS = ("num_prefix_tokens", "num_attention_heads", "num_hidden_layers", "hidden_size")


@dataclass
class PrefixConfig(PaddleNLPConfigFile):
    """PaddleNLP 2.8's ``PrefixConfig``: the same fields, defaults and ``prefix_config.json``."""

    file_name: ClassVar[str] = "prefix_config.json"

    prefix_dropout: float = 0.0
    num_prefix_tokens: int | None = None
    num_attention_heads: int | None = None
    multi_query_group_num: int | None = None
    num_hidden_layers: int | None = None
    hidden_size: int | None = None
    prefix_projection: bool = False
    prefix_projection_hidden_size: int | None = None
    tensor_parallel_degree: int = -1
    dtype: str | None = None

    def check_supported(self) -> None:
        """Refuse, naming the field, what peftplug's prefix tuning does not do."""
        if self.prefix_dropout:
            raise _refused("prefix_dropout", self.prefix_dropout, "0.0: peftplug's prefix encoder has no dropout")
        if self.dtype not in (None, ENCODER_DTYPE):
            raise _refused("dtype", self.dtype, f"None or {ENCODER_DTYPE!r}: peftplug keeps the prefix in float32")
        for field in SHAPE_FIELDS:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise _refused(field, value, "a positive integer (PaddleNLP's PrefixConfig needs it too)")
        if self.prefix_projection and not self.prefix_projection_hidden_size:
            raise _refused(
                "prefix_projection_hidden_size",
                self.prefix_projection_hidden_size,
                "a positive integer with a projection",
            )

    def to_peftplug(self) -> PrefixTuningConfig:
        """peftplug's :class:`PrefixTuningConfig` for the same prefix (trainable)."""
        return dataclasses.replace(config_from_paddlenlp(self.to_dict()), inference_mode=False)


def _refused(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError("peftplug.paddlenlp.PrefixConfig", field, value, allowed)


class PrefixModelForCausalLM(metaclass=DispatchesOnBackend):
    """PaddleNLP's ``PrefixModelForCausalLM(model, prefix_config, postprocess_past_key_value=None,
    pad_attention_mask=None)``: a trainable key/value prefix in every attention layer, built by
    peftplug. On Paddle, ``isinstance(x, paddlenlp.peft.PrefixModelForCausalLM)`` holds too (what
    PaddleNLP's ``Trainer`` checks to save the prefix files in its checkpoints)."""

    implementations: ClassVar[dict[str, str]] = {
        "paddle": "peftplug.plugins.prefix_tuning.paddlenlp_paddle:PaddlePrefixModelForCausalLM",
    }
    from_pretrained = forward_to_backend("from_pretrained")
