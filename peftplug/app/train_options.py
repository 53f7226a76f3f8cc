"""The options of ``peftplug train`` (see :mod:`peftplug.app.train`), importable without torch so
that the CLI can show their defaults and check them before the framework is loaded."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from peftplug.errors import PeftplugError

if TYPE_CHECKING:
    from peftplug.app.recipe import Recipe

MAX_POSITIONS = 1024


class TrainOptionError(PeftplugError, ValueError):
    """A training option is out of range; the message names the option and the allowed values."""


@dataclasses.dataclass
class TrainOptions:
    """What ``peftplug train`` can be told by flags; the defaults are the embedded demo job
    (:data:`peftplug.app.recipe.DEFAULT_RECIPE`), and given flags override a recipe's values."""

    steps: int = 100
    lr: float = 1e-2
    batch_size: int = 8
    seed: int = 0
    output: str = "peftplug-out"
    max_length: int = 128
    data: str | None = None
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`TrainOptionError` for an option out of range."""
        if self.steps < 1:
            raise TrainOptionError(f"--steps must be at least 1, got {self.steps}")
        if self.seed < 0:
            raise TrainOptionError(f"--seed must be a non-negative integer, got {self.seed}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainOptionError(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise TrainOptionError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 8 <= self.max_length <= MAX_POSITIONS:
            raise TrainOptionError(f"--max-length must be between 8 and {MAX_POSITIONS}, got {self.max_length}")
        if Path(self.output).exists() and not Path(self.output).is_dir():
            raise TrainOptionError(f"--output {self.output} exists and is not a directory")
        from peftplug.app.recipe import OUTPUT_DIRS_ALLOWED, output_dir_problem

        problem = output_dir_problem(self.output)
        if problem:
            raise TrainOptionError(f"--output {self.output} {problem}; choose {OUTPUT_DIRS_ALLOWED}")
        if self.data is not None and not Path(self.data).is_file():
            raise TrainOptionError(f"--data {self.data} is not a file")


def apply_options(recipe: Recipe, options: dict) -> Recipe:
    """``recipe`` with the ``peftplug train`` flags that were given (``options``: name -> value,
    names as in :class:`TrainOptions`; ``seed`` seeds both the base model and the batch order)
    put over its values. Each value is checked as the flag it came from."""
    given = {name: value for name, value in options.items() if value is not None}
    check = dataclasses.replace(TrainOptions(output=recipe.output.dir), **given)
    check.validate()
    training = dataclasses.replace(
        recipe.training,
        **{name: given[name] for name in ("lr", "batch_size", "seed", "max_length") if name in given},
    )
    if "steps" in given:
        training = dataclasses.replace(training, steps=given["steps"], epochs=None)
    changes: dict = {"training": training}
    if "seed" in given:
        changes["model"] = dataclasses.replace(recipe.model, seed=given["seed"])
    if "output" in given:
        changes["output"] = dataclasses.replace(recipe.output, dir=given["output"])
    if "data" in given:
        changes["data_path"] = given["data"]
    return recipe.replace(**changes)
