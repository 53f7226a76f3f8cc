"""PromptTuningConfig: HF PEFT's prompt-tuning fields, names and defaults."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, Literal

from peftplug.config import PromptLearningConfig


class PromptTuningInit(str, enum.Enum):
    """How the virtual tokens start (HF PEFT's enum; plain strings work as well)."""

    TEXT = "TEXT"
    SAMPLE_VOCAB = "SAMPLE_VOCAB"
    RANDOM = "RANDOM"


@dataclasses.dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning (Lester et al., 2021): ``num_virtual_tokens`` learned embeddings are put
    before the input embeddings.

    ``prompt_tuning_init`` is ``"RANDOM"`` (a fresh ``Embedding``), ``"SAMPLE_VOCAB"`` (the word
    embeddings of random vocabulary ids) or ``"TEXT"`` (the word embeddings of
    ``prompt_tuning_init_text``'s tokens, repeated or cut to the number of virtual tokens). TEXT
    needs a tokenizer: ``tokenizer_name_or_path`` (loaded with ``AutoTokenizer.from_pretrained``
    and ``tokenizer_kwargs``; ``trust_remote_code`` is dropped, as in HF PEFT) or, beyond HF PEFT,
    a tokenizer object in ``tokenizer`` (not written to adapter_config.json; its
    ``name_or_path`` fills ``tokenizer_name_or_path`` when that is unset). Field names and
    defaults are HF PEFT's.
    """

    peft_type: ClassVar[str] = "PROMPT_TUNING"

    prompt_tuning_init: Literal["RANDOM", "SAMPLE_VOCAB", "TEXT"] = "RANDOM"
    prompt_tuning_init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_kwargs: dict | None = None
    tokenizer: Any = dataclasses.field(default=None, repr=False, compare=False, metadata={"serialize": False})

    def validate(self) -> None:
        """TEXT init needs its text and a tokenizer; ``tokenizer_kwargs`` only with TEXT (HF's rules)."""
        super().validate()
        if self.tokenizer is not None and not self.tokenizer_name_or_path:
            self.tokenizer_name_or_path = getattr(self.tokenizer, "name_or_path", None) or None
        if self.prompt_tuning_init == "TEXT":
            if not self.prompt_tuning_init_text:
                self._fail(
                    "prompt_tuning_init_text",
                    self.prompt_tuning_init_text,
                    "the init text, required when prompt_tuning_init='TEXT'",
                )
            if not self.tokenizer_name_or_path and self.tokenizer is None:
                self._fail(
                    "tokenizer_name_or_path",
                    self.tokenizer_name_or_path,
                    "a tokenizer path (or a tokenizer object in `tokenizer`), required when prompt_tuning_init='TEXT'",
                )
        elif self.tokenizer_kwargs:
            self._fail("tokenizer_kwargs", self.tokenizer_kwargs, "only used when prompt_tuning_init='TEXT'")
