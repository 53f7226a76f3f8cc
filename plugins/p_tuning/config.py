"""PromptEncoderConfig: HF PEFT's P-tuning fields, names and defaults."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, Literal

from peftplug.config import PromptLearningConfig


class PromptEncoderReparameterizationType(str, enum.Enum):
    """The network that produces the virtual tokens (HF PEFT's enum; plain strings work as well)."""

    MLP = "MLP"
    LSTM = "LSTM"


@dataclasses.dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning (Liu et al., 2021): virtual-token embeddings passed through a small network (the
    reparameterisation) and put before the input embeddings.

    ``encoder_reparameterization_type`` is ``"MLP"`` (Linear ReLU Linear ReLU Linear, always
    three layers: ``encoder_num_layers`` is ignored with a warning, as in HF PEFT) or ``"LSTM"``
    (a bidirectional LSTM of ``encoder_num_layers`` layers with ``encoder_dropout`` between them,
    then Linear ReLU Linear). ``encoder_hidden_size`` None means ``token_dim``. Field names and
    defaults are HF PEFT's.
    """

    peft_type: ClassVar[str] = "P_TUNING"

    encoder_reparameterization_type: Literal["MLP", "LSTM"] = "MLP"
    encoder_hidden_size: int | None = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def validate(self) -> None:
        """Sizes positive, dropout a probability."""
        super().validate()
        if self.encoder_hidden_size is not None and self.encoder_hidden_size <= 0:
            self._fail("encoder_hidden_size", self.encoder_hidden_size, "a positive integer, or None for token_dim")
        if self.encoder_num_layers <= 0:
            self._fail("encoder_num_layers", self.encoder_num_layers, "a positive integer")
        if not 0.0 <= self.encoder_dropout < 1.0:
            self._fail("encoder_dropout", self.encoder_dropout, "a probability in [0, 1)")

    def _model_specific_fields(self, resolved: dict[str, Any], model_values: dict[str, Any]) -> dict[str, Any]:
        """``encoder_hidden_size`` defaults to ``token_dim``, as in HF PEFT."""
        return {"encoder_hidden_size": resolved["token_dim"]} if resolved["encoder_hidden_size"] is None else {}
