"""Instruction-tuning data for the built-in training job: reading, splitting, prompt masking.

The shipped dataset is ``peftplug/app/data/instructions.jsonl`` (one JSON object per line with
``instruction``, ``input`` and ``output``), found through :mod:`importlib.resources`, so it is
read the same way from a source checkout, an editable install and a wheel. Pure Python:
importing this module imports no framework.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from peftplug.app.tokenizer import ByteTokenizer
from peftplug.errors import PeftplugError

IGNORE_INDEX = -100
DATASET_RESOURCE = "data/instructions.jsonl"


class DataError(PeftplugError, ValueError):
    """An instruction file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One instruction-tuning example."""

    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + response, and labels with every prompt position set to -100."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def default_dataset_path() -> str:
    """A readable description of where the shipped dataset lives (for messages)."""
    return str(resources.files("peftplug.app").joinpath(DATASET_RESOURCE))


def load_instructions(path: str | Path | None = None) -> list[Example]:
    """Read a JSONL instruction file (default: the dataset shipped with peftplug).

    Every line is an object with string fields ``instruction`` and ``output`` and an optional
    string ``input``; blank lines are skipped. Raises :class:`DataError` naming the file and
    line of the first bad record.
    """
    if path is None:
        resource = resources.files("peftplug.app").joinpath(DATASET_RESOURCE)
        if not resource.is_file():
            raise DataError(f"the dataset shipped with peftplug is missing: {resource}; reinstall peftplug")
        text, origin = resource.read_text(encoding="utf-8"), str(resource)
    else:
        try:
            text, origin = Path(path).read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read instruction file {path}: {error}") from error
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{origin}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{origin}, line {number}: expected a JSON object, got {type(record).__name__}")
        record.setdefault("input", "")
        for field in ("instruction", "input", "output"):
            if not isinstance(record.get(field), str):
                raise DataError(f"{origin}, line {number}: field {field!r} must be a string")
        if not record["output"]:
            raise DataError(f"{origin}, line {number}: field 'output' is empty")
        examples.append(Example(record["instruction"], record["input"], record["output"]))
    if not examples:
        raise DataError(f"{origin} holds no examples")
    return examples


def format_prompt(example: Example) -> str:
    """The prompt the model sees before the response: a compact Alpaca-style template
    (``Task: ...``, ``Input: ...`` when there is one, then ``Answer: ``)."""
    if example.input:
        return f"Task: {example.instruction}\nInput: {example.input}\nAnswer: "
    return f"Task: {example.instruction}\nAnswer: "


def encode_example(tokenizer: ByteTokenizer, example: Example, max_length: int) -> EncodedExample | None:
    """Tokens ``<s> prompt response </s>``, cut to ``max_length``; labels are the tokens
    themselves on the response (and eos) and -100 on ``<s>`` and the prompt, so the loss is
    taken on the response only. None when nothing of the response fits in ``max_length``."""
    prompt = tokenizer.encode(format_prompt(example), add_bos=True)
    response = tokenizer.encode(example.output, add_eos=True)
    input_ids = (prompt + response)[:max_length]
    if len(input_ids) <= len(prompt):
        return None
    labels = [IGNORE_INDEX] * len(prompt) + input_ids[len(prompt) :]
    return EncodedExample(input_ids, labels, len(prompt))


def encode_all(tokenizer: ByteTokenizer, examples: Sequence[Example], max_length: int) -> list[EncodedExample]:
    """Encode ``examples``, dropping those whose response does not fit; an error when none fits."""
    encoded = [item for item in (encode_example(tokenizer, e, max_length) for e in examples) if item is not None]
    if examples and not encoded:
        shortest_prompt = min(len(tokenizer.encode(format_prompt(e), add_bos=True)) for e in examples)
        raise DataError(
            f"max_length={max_length} leaves no room for any response (the shortest prompt is "
            f"{shortest_prompt} tokens); raise --max-length"
        )
    return encoded


def split_examples(
    examples: Sequence[Example], held_out: float = 0.125, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, held-out): a seeded shuffle, then the last ``held_out`` fraction (at least one
    example, and at least one left to train on)."""
    if len(examples) < 2:
        raise DataError(f"need at least 2 examples to hold one out, got {len(examples)}")
    order = list(examples)
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(len(order) * held_out)))
    return order[:-count], order[-count:]
