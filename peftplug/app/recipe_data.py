"""A recipe's data and tokenizer: reading JSON / JSONL / CSV records, prompt masking, batching.

Records hold either ``instruction`` (+ optional ``input``) and ``output`` — formatted with the
prompt template of :func:`peftplug.app.instructions.format_prompt` — or ``prompt`` and
``completion``, used verbatim. Either way the model sees ``<bos> prompt response <eos>`` and
the loss is taken on the response (and eos) only. Pure Python: no framework.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftplug.app.instructions import (
    IGNORE_INDEX,
    DataError,
    EncodedExample,
    Example,
    format_prompt,
    load_instructions,
    split_examples,
)
from peftplug.app.tokenizer import ByteTokenizer


@dataclass(frozen=True)
class PromptPair:
    """One training example: the prompt text (masked in the loss) and the response text."""

    prompt: str
    response: str


def load_pairs(path: str | Path | None) -> list[PromptPair]:
    """The examples of ``path`` (``.json``: a list of records; ``.csv``: a header row, then
    records; any other suffix, ``.jsonl`` included: one JSON record per line), or of the shipped dataset when ``path`` is None.
    Raises :class:`~peftplug.app.instructions.DataError` naming the file and line of a bad record."""
    if path is None:
        return [PromptPair(format_prompt(e), e.output) for e in load_instructions()]
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read data file {path}: {error}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        records = _json_records(text, path)
    elif suffix == ".csv":
        records = _csv_records(text, path)
    else:  # .jsonl, and any other name given to ``peftplug train --data``
        records = _jsonl_records(text, path)
    pairs = [_pair(record, where) for where, record in records]
    if not pairs:
        raise DataError(f"{path} holds no examples")
    return pairs


def _jsonl_records(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}, line {number}", json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None


def _json_records(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, record in enumerate(data):
        yield f"{path}, record {index}", record


def _csv_records(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    while True:
        starts = max(reader.line_num, 1) + 1  # the line the next record begins on, after the header
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # an unterminated quote runs to the end of the file
            raise DataError(f"{path}, line {starts}: {error} (a quote opened and never closed?)") from None
        if None in record:
            raise DataError(f"{path}, line {reader.line_num}: more cells than header columns ({reader.fieldnames})")
        yield f"{path}, line {reader.line_num}", {k: v for k, v in record.items() if v is not None}


def _pair(record: Any, where: str) -> PromptPair:
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: expected an object with instruction/output or prompt/completion, got {type(record).__name__}"
        )
    if "prompt" in record or "completion" in record:
        fields, build = ("prompt", "completion"), lambda r: PromptPair(r["prompt"], r["completion"])
    elif "instruction" in record or "output" in record:
        record = {"input": "", **record}
        fields = ("instruction", "input", "output")
        build = lambda r: PromptPair(format_prompt(Example(r["instruction"], r["input"], r["output"])), r["output"])  # noqa: E731
    else:
        raise DataError(
            f"{where}: no instruction/output or prompt/completion fields (found: {', '.join(sorted(record)) or 'none'})"
        )
    for field in fields:
        if not isinstance(record.get(field), str):
            raise DataError(f"{where}: field {field!r} must be a string, got {type(record.get(field)).__name__}")
    if not record[fields[-1]]:
        raise DataError(f"{where}: field {fields[-1]!r} is empty")
    return build(record)


# ----------------------------------------------------------------------------- tokenizer
class HFTokenizerAdapter:
    """A transformers / PaddleNLP tokenizer seen through :class:`ByteTokenizer`'s interface
    (``encode(text, add_bos=, add_eos=)``, ``decode``, the three special ids, ``vocab_size``)."""

    def __init__(self, tokenizer: Any, directory: str):
        self.tokenizer = tokenizer
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise DataError(f"tokenizer {directory} has no eos token; the training job needs one to end responses")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        self.vocab_size = len(tokenizer)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text`` without the tokenizer's own special tokens, framed on request."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if isinstance(ids, dict) or (ids and not isinstance(ids[0], int)):  # PaddleNLP returns a dict
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if add_bos and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        if add_eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The text of ``ids``."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size


def load_tokenizer(directory: str | None, backend: str) -> Any:
    """peftplug's :class:`ByteTokenizer` (None), or the local tokenizer in ``directory`` loaded
    by the backend's own library (its model builder's ``load_tokenizer``)."""
    if directory is None:
        return ByteTokenizer()
    from peftplug.app.backend_parts import model_builder

    builder = model_builder(backend)
    try:
        tokenizer = builder.load_tokenizer(directory)
    except Exception as error:  # the libraries raise many types for an unusable directory
        raise DataError(f"tokenizer {directory} cannot be loaded: {type(error).__name__}: {error}") from None
    return HFTokenizerAdapter(tokenizer, directory)


# ----------------------------------------------------------------------------- encoding and batches
def encode_pair(tokenizer: Any, pair: PromptPair, max_length: int) -> EncodedExample | None:
    """``<bos> prompt response <eos>`` cut to ``max_length``, labels -100 on bos and the prompt;
    None when nothing of the response fits (as :func:`peftplug.app.instructions.encode_example`)."""
    prompt = tokenizer.encode(pair.prompt, add_bos=True)
    response = tokenizer.encode(pair.response, add_eos=True)
    input_ids = (prompt + response)[:max_length]
    if len(input_ids) <= len(prompt):
        return None
    return EncodedExample(input_ids, [IGNORE_INDEX] * len(prompt) + input_ids[len(prompt) :], len(prompt))


def encode_pairs(tokenizer: Any, pairs: Sequence[PromptPair], max_length: int) -> list[EncodedExample]:
    """Encode ``pairs``, dropping those whose response does not fit; an error when none fits."""
    encoded = [item for item in (encode_pair(tokenizer, p, max_length) for p in pairs) if item is not None]
    if pairs and not encoded:
        raise DataError(f"training.max_length={max_length} leaves no room for any response; raise it")
    return encoded


def split_pairs(pairs: Sequence[PromptPair], eval_split: float) -> tuple[list[PromptPair], list[PromptPair]]:
    """(train, held out): the seeded split of :func:`peftplug.app.instructions.split_examples`."""
    return split_examples(pairs, held_out=eval_split)  # type: ignore[arg-type]


def steps_for_epochs(epochs: float, examples: int, batch_size: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``examples`` in full batches (at least 1)."""
    per_epoch = max(1, examples // batch_size)
    return max(1, math.ceil(epochs * per_epoch))


def batch_order(examples: Sequence[EncodedExample], batch_size: int, seed: int) -> Iterator[list[EncodedExample]]:
    """Endless shuffled batches, reshuffled each epoch with a seeded RNG; a ragged tail is
    dropped so every step sees a full batch (when there are enough examples)."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if len(chunk) < batch_size and len(order) >= batch_size:
                break
            yield [examples[i] for i in chunk]


def lr_schedule(steps: int) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warmup over 5% of the steps, then linear decay
    to 10%."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, steps - warmup))

    return factor
