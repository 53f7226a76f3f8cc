"""PrefixTuningConfig: HF PEFT's prefix-tuning fields, names and defaults."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from peftplug.config import PromptLearningConfig


@dataclasses.dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning (Li & Liang, 2021): learned keys and values for ``num_virtual_tokens``
    positions are put before every attention layer's cache.

    Without ``prefix_projection`` the prefix is an ``Embedding(T, num_layers * 2 * token_dim)``;
    with it, an ``Embedding(T, token_dim)`` followed by Linear(token_dim, encoder_hidden_size)
    Tanh Linear(encoder_hidden_size, num_layers * 2 * token_dim). ``init_weights="zero"`` starts
    the prefix (the last layer, with projection) at zero. For grouped-query attention models
    ``token_dim`` is the key/value width, ``head_dim * num_key_value_heads``, and
    ``num_attention_heads`` the number of key/value heads, as HF PEFT sets them.
    ``encoder_hidden_size`` None means ``token_dim``. Field names and defaults are HF PEFT's.
    """

    peft_type: ClassVar[str] = "PREFIX_TUNING"

    init_weights: Literal["zero"] | None = None
    encoder_hidden_size: int | None = None
    prefix_projection: bool = False

    def validate(self) -> None:
        """``encoder_hidden_size`` positive when set."""
        super().validate()
        if self.encoder_hidden_size is not None and self.encoder_hidden_size <= 0:
            self._fail("encoder_hidden_size", self.encoder_hidden_size, "a positive integer, or None for token_dim")

    def _model_specific_fields(self, resolved: dict[str, Any], model_values: dict[str, Any]) -> dict[str, Any]:
        """The key/value width for grouped-query attention, then ``encoder_hidden_size``.

        HF PEFT's rule: when the model's config has ``num_key_value_heads``, ``token_dim``
        becomes ``head_dim * num_key_value_heads`` (``head_dim`` from the config, else
        ``token_dim // num_attention_heads``) and ``num_attention_heads`` the key/value heads.
        Applying it to a saved config again changes nothing.
        """
        updates: dict[str, Any] = {}
        kv_heads = model_values.get("num_key_value_heads")
        if kv_heads is not None:
            if model_values.get("global_head_dim") is not None:
                head_dim = model_values["global_head_dim"]
                kv_heads = model_values.get("num_global_key_value_heads") or kv_heads
            elif model_values.get("head_dim") is not None:
                head_dim = model_values["head_dim"]
            else:
                head_dim = resolved["token_dim"] // resolved["num_attention_heads"]
            updates = {"token_dim": int(head_dim * kv_heads), "num_attention_heads": int(kv_heads)}
        if resolved["encoder_hidden_size"] is None:
            updates["encoder_hidden_size"] = updates.get("token_dim", resolved["token_dim"])
        return updates
