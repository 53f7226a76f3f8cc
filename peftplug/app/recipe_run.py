"""Running a validated :class:`~peftplug.app.recipe.Recipe`: the framework-free half.

:func:`run_recipe` reads and encodes the data, hands the job to the recipe runner its backend
declares (:mod:`peftplug.app.backend_parts`), and writes the JSON report beside the adapter.
Everything that can be refused (the recipe, the data file, the tokenizer, ``max_length``) is
checked before a framework is imported or a file written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftplug.app.backend_parts import part
from peftplug.app.instructions import EncodedExample
from peftplug.app.recipe import Recipe
from peftplug.app.recipe_data import encode_pairs, load_pairs, load_tokenizer, split_pairs, steps_for_epochs
from peftplug.app.recipe_loop import RunResult


@dataclasses.dataclass
class PreparedData:
    """The encoded splits, the tokenizer, the number of optimizer steps to run, and how many
    examples were dropped because nothing of their response fits in ``max_length``."""

    tokenizer: Any
    train: list[EncodedExample]
    held_out: list[EncodedExample]
    steps: int
    source: str
    max_length: int = 0
    dropped: int = 0

    def summary(self) -> list[str]:
        """The log lines about the data: the split's sizes, then the dropped examples if any."""
        lines = [f"data: {len(self.train)} training / {len(self.held_out)} held-out examples from {self.source}"]
        if self.dropped:
            total = len(self.train) + len(self.held_out) + self.dropped
            lines.append(
                f"warning: dropped {self.dropped} of {total} examples: their prompt takes all of max_length="
                f"{self.max_length} tokens, leaving none for the response (longer responses are cut to fit); "
                "raise training.max_length (--max-length) to keep them"
            )
        return lines


def prepare_data(recipe: Recipe) -> PreparedData:
    """Tokenizer, split and encoded examples for ``recipe``, and the resolved step count."""
    tokenizer = load_tokenizer(recipe.tokenizer, recipe.backend)
    train_pairs, held_out_pairs = split_pairs(load_pairs(recipe.data_path), recipe.eval_split)
    train = encode_pairs(tokenizer, train_pairs, recipe.training.max_length)
    held_out = encode_pairs(tokenizer, held_out_pairs, recipe.training.max_length)
    training = recipe.training
    steps = training.steps or steps_for_epochs(training.epochs, len(train), training.batch_size)
    source = recipe.data_path or "the dataset shipped with peftplug"
    dropped = len(train_pairs) + len(held_out_pairs) - len(train) - len(held_out)
    return PreparedData(tokenizer, train, held_out, steps, source, recipe.training.max_length, dropped)


LAUNCHED_ENV = "PEFTPLUG_LAUNCHED"


def process_rank() -> int:
    """This process's rank in a job the launcher started (``RANK``), 0 on one process."""
    return int(os.environ.get("RANK", "0"))


def launch_processes(recipe: Recipe) -> bool:
    """True when ``recipe`` asks for several processes and this one was not started by a launcher
    (``peftplug train`` then runs itself again through the backend's launcher)."""
    launched = os.environ.get(LAUNCHED_ENV) or os.environ.get("WORLD_SIZE")
    return recipe.distributed.processes > 1 and not launched


def run_recipe(recipe: Recipe, log: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """Train as ``recipe`` says on its backend, save the adapter (and the merged model when
    ``output.merge``) and the report; return the :class:`~peftplug.app.recipe_loop.RunResult`.
    Across processes only rank 0 logs, shows the progress bar and writes the report."""
    if process_rank() != 0:
        log, progress = (lambda line: None), False
    data = prepare_data(recipe)
    run = part(recipe.backend, "recipe_runner", "training runner")
    for line in data.summary():
        log(line)
    result = run(recipe, data, log=log, progress=progress)
    if recipe.output.report and process_rank() == 0:
        path = Path(recipe.output.dir) / recipe.output.report
        path.write_text(json.dumps(result.report(recipe), indent=2) + "\n")
        log(f"wrote the report to {path}")
    return result
