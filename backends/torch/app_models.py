"""The PyTorch backend's models for the app (its ``model_builder``): transformers builds the
tiny models of recipes and loads model directories and tokenizers.

Importing this module imports neither torch nor transformers (the recipe checks read the
builder's attributes); its methods import them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The transformers config and model classes of each tiny architecture a recipe can build.
TINY_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
}
# The transformers Auto class that loads a model directory for an adapter's task type.
AUTO_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}


class TorchModels:
    """Models of transformers (see :class:`peftplug.app.backend_parts.ModelBuilder`)."""

    library = "transformers"
    tiny_architectures = tuple(TINY_CLASSES)
    weight_files = ("*.safetensors", "pytorch_model*.bin")
    task_types = None

    def recognises(self, directory: Path) -> bool:
        """True when transformers wrote the directory's config.json (``transformers_version``)."""
        try:
            config = json.loads((Path(directory) / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and "transformers_version" in config

    def build(self, spec: Any, tokenizer: Any) -> Any:
        """The base model of ``spec``: the tiny architecture with random weights drawn after
        ``torch.manual_seed(spec.seed)`` (untied embeddings, eager attention, vocabulary and
        special tokens from ``tokenizer``), or the local transformers directory ``spec.path``.
        In eval mode."""
        import torch
        import transformers

        if spec.path is not None:
            torch.manual_seed(spec.seed)
            model = transformers.AutoModelForCausalLM.from_pretrained(spec.path, local_files_only=True)
            return model.eval()
        config_name, model_name = TINY_CLASSES[spec.architecture]
        config = getattr(transformers, config_name)(
            vocab_size=tokenizer.vocab_size,
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            attn_implementation="eager",
            **spec.config,
        )
        torch.manual_seed(spec.seed)
        return getattr(transformers, model_name)(config).eval()

    def load(self, directory: str, task_type: str | None, **options: Any) -> Any:
        """The directory loaded by the transformers Auto class of ``task_type``, in eval mode;
        ``options`` (``torch_dtype``, ``device_map``, ...) go to its ``from_pretrained``."""
        import transformers

        auto = getattr(transformers, AUTO_CLASSES.get(task_type or "CAUSAL_LM", "AutoModelForCausalLM"))
        return auto.from_pretrained(directory, local_files_only=True, **options).eval()

    def load_tokenizer(self, directory: str) -> Any:
        """transformers' ``AutoTokenizer`` of ``directory`` (local files only)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory, local_files_only=True)


MODELS = TorchModels()
