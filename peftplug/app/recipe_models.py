"""Base models named on the command line, for ``peftplug merge --base`` and ``peftplug generate``.

``--base`` is a local model directory (transformers' layout; PaddleNLP's once the Paddle side
handles it) or a recipe file, whose ``model`` section is rebuilt exactly as ``peftplug train``
built it (same architecture, config and seed, hence the same random weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from peftplug.app.recipe import Recipe, load_recipe
from peftplug.app.recipe_source import SUFFIXES
from peftplug.errors import PeftplugError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "sentencepiece.bpe.model",
)
AUTO_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}


class BaseModelError(PeftplugError, ValueError):
    """``--base`` names nothing usable; the message names it and says what is allowed."""


def is_recipe_file(base: str) -> bool:
    """True when ``base`` is a recipe file (by suffix) rather than a model directory."""
    return Path(base).is_file() and Path(base).suffix.lower() in SUFFIXES


def check_base(base: str) -> None:
    """Refuse a ``--base`` that is neither a model directory with config.json nor a recipe file."""
    path = Path(base)
    if is_recipe_file(base):
        return
    if not path.exists():
        raise BaseModelError(f"--base {base}: no such directory or recipe file")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise BaseModelError(
            f"--base {base}: not a model directory with config.json, nor a recipe file ({', '.join(SUFFIXES)})"
        )


def check_tokenizer(base: str) -> None:
    """Refuse a model directory ``base`` without tokenizer files unless peftplug's ByteTokenizer
    (the fallback) fits its model: the vocabulary in its config.json must be the byte
    tokenizer's, as in a model trained by a recipe without a tokenizer and merged. Otherwise
    token ids would not match the model's embeddings."""
    from peftplug.app.tokenizer import ByteTokenizer

    if is_recipe_file(base) or (Path(base) / "tokenizer_config.json").is_file():
        return
    try:
        vocab_size = json.loads((Path(base) / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        vocab_size = None
    if vocab_size != ByteTokenizer.vocab_size:
        raise BaseModelError(
            f"--base {base}: has no tokenizer (no tokenizer_config.json), and peftplug's byte tokenizer "
            f"({ByteTokenizer.vocab_size} tokens) does not fit its model (vocab_size {vocab_size}); save the "
            "model's tokenizer into it, or give the recipe that trained the adapter as --base"
        )


def base_backend(base: str) -> str:
    """The framework a ``--base`` belongs to: its recipe's backend, or ``paddle`` for a
    directory that PaddleNLP wrote (``*.pdparams`` weights, or ``paddlenlp_version`` in its
    config.json), else ``torch``."""
    if is_recipe_file(base):
        return load_recipe(base).backend
    if any(Path(base).glob("*.pdparams")):
        return "paddle"
    try:
        config = json.loads((Path(base) / "config.json").read_text())
    except (OSError, ValueError):
        return "torch"
    return "paddle" if isinstance(config, dict) and "paddlenlp_version" in config else "torch"


def load_torch_base(base: str, task_type: str | None) -> tuple[Any, Any, Recipe | None]:
    """(model, tokenizer or None, recipe or None) for ``base`` on torch: the recipe's model and
    tokenizer, or the directory loaded by the transformers Auto class of ``task_type``."""
    from peftplug.app.recipe_data import load_tokenizer
    from peftplug.app.recipe_torch import build_model

    if is_recipe_file(base):
        recipe = load_recipe(base, backend="torch")
        tokenizer = load_tokenizer(recipe.tokenizer, "torch")
        return build_model(recipe.model, tokenizer), tokenizer, recipe
    import transformers

    auto = getattr(transformers, AUTO_CLASSES.get(task_type or "CAUSAL_LM", "AutoModelForCausalLM"))
    model = auto.from_pretrained(base, local_files_only=True).eval()
    tokenizer = load_tokenizer(base, "torch") if (Path(base) / "tokenizer_config.json").is_file() else None
    return model, tokenizer, None


def copy_tokenizer_files(base: str, out: Path) -> list[str]:
    """Copy the tokenizer files of model directory ``base`` into ``out``; returns their names."""
    copied = []
    if is_recipe_file(base):
        return copied
    for name in TOKENIZER_FILES:
        if (Path(base) / name).is_file():
            shutil.copyfile(Path(base) / name, out / name)
            copied.append(name)
    return copied


def paddle_tokenizer(base: str, recipe: Recipe | None) -> Any:
    """The tokenizer that goes with a Paddle ``base``: the recipe's, the model directory's own
    (PaddleNLP's AutoTokenizer) when it has one, else peftplug's ByteTokenizer."""
    from peftplug.app.recipe_data import load_tokenizer

    if recipe is not None:
        return load_tokenizer(recipe.tokenizer, "paddle")
    has_tokenizer = (Path(base) / "tokenizer_config.json").is_file()
    return load_tokenizer(base if has_tokenizer else None, "paddle")


def load_paddle_base(base: str) -> tuple[Any, Recipe | None]:
    """(model, recipe or None) for ``base`` on Paddle: the recipe's model (PaddleNLP), or the
    directory loaded by PaddleNLP's ``AutoModelForCausalLM``."""
    from peftplug.app.recipe_data import load_tokenizer
    from peftplug.app.recipe_paddle import build_model

    if is_recipe_file(base):
        recipe = load_recipe(base, backend="paddle")
        return build_model(recipe.model, load_tokenizer(recipe.tokenizer, "paddle")), recipe
    from paddlenlp.transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    model.eval()
    return model, None
