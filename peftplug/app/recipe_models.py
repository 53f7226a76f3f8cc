"""Base models named on the command line, for ``peftplug merge --base`` and ``peftplug generate``.

``--base`` is a local model directory (of whichever backend's library recognises it) or a recipe
file, whose ``model`` section is rebuilt exactly as ``peftplug train`` built it (same
architecture, config and seed, hence the same random weights). The backend's model builder
(:mod:`peftplug.app.backend_parts`) builds or loads it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from peftplug.app.backend_parts import builders, model_builder
from peftplug.app.recipe import DEFAULT_BACKEND, load_recipe
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
    """The backend a ``--base`` belongs to: its recipe's backend, or the one whose model library
    recognises the directory (the default backend when none or several do)."""
    if is_recipe_file(base):
        return load_recipe(base).backend
    claimed = [name for name, builder in builders().items() if builder.recognises(Path(base))]
    return claimed[0] if len(claimed) == 1 else DEFAULT_BACKEND


def load_base(base: str, task_type: str | None, command: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, backend name) for ``base``: the recipe's model and tokenizer, or the
    directory loaded by its backend's library with the directory's own tokenizer (peftplug's
    ByteTokenizer when it has none). An adapter ``task_type`` the backend's models do not serve
    is refused, naming ``command``, before anything loads."""
    from peftplug.app.recipe_data import load_tokenizer

    backend = base_backend(base)
    builder = model_builder(backend)
    if builder.task_types is not None and task_type not in (None, *builder.task_types):
        raise BaseModelError(
            f"--base {base}: {command} on {builder.library} models takes {', '.join(builder.task_types)} adapters, "
            f"not task_type {task_type!r}"
        )
    if is_recipe_file(base):
        recipe = load_recipe(base, backend=backend)
        tokenizer = load_tokenizer(recipe.tokenizer, backend)
        return builder.build(recipe.model, tokenizer), tokenizer, backend
    has_tokenizer = (Path(base) / "tokenizer_config.json").is_file()
    return builder.load(base, task_type), load_tokenizer(base if has_tokenizer else None, backend), backend


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
