"""The model card (``README.md``) HF PEFT writes beside an adapter in its format.

HF PEFT's ``PeftModel.create_or_update_model_card`` gives the card ``library_name: peft``, the
base model, tags (the base model's, ``transformers``, the method's (LoRA's ``lora``),
``base_model:adapter:<base>``), ``pipeline_tag: text-generation`` for a causal LM, and a
``### Framework versions`` section; an existing card keeps its text and metadata and is only
updated. This module does the same in
plain Python (PyYAML for the metadata), so saving needs no huggingface_hub.
"""

from __future__ import annotations

import re
from typing import Any

from peftplug.errors import PeftplugError

CARD_NAME = "README.md"
FRAMEWORK_HEADING = "### Framework versions"
# huggingface_hub's pattern for the metadata block that opens a card
_METADATA = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_TEMPLATE = """\
# Model Card for Model ID

<!-- Provide a quick summary of what the model is/does. -->

A {method} adapter{for_base}, saved by peftplug in HF PEFT's format: it loads with
`peft.PeftModel.from_pretrained` (PyTorch) or `peftplug.PeftModel.from_pretrained` (PyTorch or PaddlePaddle).

"""


def card_tags(config: Any, base_model: Any, method_tags: tuple[str, ...]) -> list[str]:
    """HF PEFT's tags for an adapter of ``config`` on ``base_model`` (the user's model);
    ``method_tags`` are those the method declares (``Method.card_tags``)."""
    tags = set(getattr(base_model, "model_tags", None) or []) | set(method_tags)
    if any(cls.__module__.split(".")[0] == "transformers" for cls in type(base_model).__mro__):
        tags.add("transformers")
    if config.base_model_name_or_path:
        tags.add(f"base_model:adapter:{config.base_model_name_or_path}")
    return sorted(tags)


def model_card(existing: str | None, config: Any, tags: list[str], version: str, where: str) -> bytes:
    """The card's bytes: ``existing`` (the text of a card already there, or None) updated as HF
    PEFT updates it, for an adapter of ``config``. ``where`` names the card in errors."""
    metadata, text = _split(existing, where) if existing is not None else ({}, _new_text(config))
    metadata["library_name"] = "peft"
    own = metadata.get("tags") or []
    merged_tags = sorted(set([own] if isinstance(own, str) else own) | set(tags))
    if merged_tags:
        metadata["tags"] = merged_tags
    if not metadata.get("pipeline_tag") and config.task_type == "CAUSAL_LM":
        metadata["pipeline_tag"] = "text-generation"
    if config.base_model_name_or_path:
        metadata["base_model"] = config.base_model_name_or_path
    lines = text.splitlines()
    version_line = f"- peftplug {version}"
    if version_line not in lines:
        if FRAMEWORK_HEADING in lines:
            lines.insert(lines.index(FRAMEWORK_HEADING) + 2, version_line)
        else:
            lines.append(f"{FRAMEWORK_HEADING}\n\n{version_line}")
    import yaml

    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    body = "\n".join(lines).strip("\n")
    return f"---\n{header}---\n\n{body}\n".encode()


def _new_text(config: Any) -> str:
    base = config.base_model_name_or_path
    return _TEMPLATE.format(method=config.peft_type, for_base=f" for {base}" if base else "")


def _split(card: str, where: str) -> tuple[dict[str, Any], str]:
    """(metadata, text) of a card; a card without a metadata block is all text."""
    import yaml

    match = _METADATA.match(card)
    if match is None:
        return {}, card
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as error:
        raise PeftplugError(f"{where}: the metadata block is not valid YAML ({error}); fix or remove it") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise PeftplugError(f"{where}: the metadata block holds a {type(metadata).__name__}, not a mapping")
    return metadata, card[match.end() :]
