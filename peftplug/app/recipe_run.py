"""Running a validated :class:`~peftplug.app.recipe.Recipe`: the framework-free half.

:func:`run_recipe` reads and encodes the data, hands the job to the backend's runner
(:mod:`peftplug.app.recipe_torch`, :mod:`peftplug.app.recipe_paddle`), and writes the JSON report
beside the adapter. Everything that can be refused (the recipe, the data file, the tokenizer,
``max_length``) is checked before a framework is imported or a file written.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftplug.app.instructions import EncodedExample
from peftplug.app.recipe import Recipe
from peftplug.app.recipe_data import (
    batch_order,
    encode_pairs,
    load_pairs,
    load_tokenizer,
    split_pairs,
    steps_for_epochs,
)

RUNNERS = {"torch": "peftplug.app.recipe_torch", "paddle": "peftplug.app.recipe_paddle"}
# The model library of each backend: it loads a merged model alone.
MODEL_LIBRARIES = {"torch": "transformers", "paddle": "paddlenlp"}
# Per built-in format: the library whose own loader reads its files (whichever backend saved
# them: a save is in the format's module tree), and that loader by method (None: any method).
FORMAT_LOADERS: dict[str, tuple[str, dict[str | None, str]]] = {
    "peft": ("HF PEFT", {None: "peft.PeftModel.from_pretrained"}),
    "paddlenlp": (
        "PaddleNLP",
        {
            "lora": "paddlenlp.peft.LoRAModel.from_pretrained",
            "prefix_tuning": "paddlenlp.peft.PrefixModelForCausalLM.from_pretrained",
        },
    ),
}


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


@dataclasses.dataclass
class RunResult:
    """What a recipe run did. ``losses`` holds the training loss of every step; the eval losses
    are mean cross-entropy per response token on the held-out split."""

    backend: str
    losses: list[float]
    eval_loss_before: float
    eval_loss_after: float
    trainable_params: int
    all_params: int
    steps: int
    seconds: float
    tokens: int
    train_examples: int
    held_out_examples: int
    output: Path
    model: Any = dataclasses.field(default=None, repr=False)

    @property
    def tokens_per_second(self) -> float:
        """Training throughput, counting non-padding tokens."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def report(self, recipe: Recipe) -> dict[str, Any]:
        """The JSON report: recipe origin, backend, losses, eval loss and perplexity, speed, sizes."""
        return {
            "recipe": recipe.origin,
            "backend": self.backend,
            "method": recipe.method,
            "steps": self.steps,
            "losses": [round(loss, 6) for loss in self.losses],
            "eval_loss_before": self.eval_loss_before,
            "eval_loss_after": self.eval_loss_after,
            "eval_perplexity_before": _perplexity(self.eval_loss_before),
            "eval_perplexity_after": _perplexity(self.eval_loss_after),
            "tokens": self.tokens,
            "tokens_per_second": self.tokens_per_second,
            "seconds": self.seconds,
            "trainable_params": self.trainable_params,
            "all_params": self.all_params,
            "train_examples": self.train_examples,
            "held_out_examples": self.held_out_examples,
        }


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


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


def train_and_save(
    model: Any,
    recipe: Recipe,
    data: PreparedData,
    *,
    backend: str,
    step: Callable[[list[EncodedExample]], tuple[float, int]],
    evaluate: Callable[[], float],
    log: Callable[[str], None],
    progress: bool,
) -> RunResult:
    """The framework-free part of a runner, for ``model`` of ``backend``: the parameter counts
    and the held-out loss (``evaluate()``) logged, then, in training mode, ``data.steps`` calls of
    ``step`` (one optimizer step on a batch of examples, returning its loss and its non-padding
    tokens) under a tqdm bar with loss and tokens/s, the held-out loss after, the adapter saved
    in the recipe's format (and the merged model when ``output.merge``), each with what loads it."""
    from tqdm.auto import tqdm

    trainable, total = model.get_nb_trainable_parameters()
    log(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")
    loss_before = evaluate()
    log(f"held-out loss before training: {loss_before:.4f}")
    model.train()

    batches = batch_order(data.train, recipe.training.batch_size, recipe.training.seed)
    losses: list[float] = []
    tokens, started = 0, time.perf_counter()
    with tqdm(total=data.steps, desc="train", unit="step", disable=not progress, file=sys.stderr) as bar:
        for _ in range(data.steps):
            loss, batch_tokens = step(next(batches))
            losses.append(loss)
            tokens += batch_tokens
            elapsed = time.perf_counter() - started
            bar.set_postfix({"loss": f"{losses[-1]:.3f}", "tok/s": f"{tokens / elapsed:.0f}"}, refresh=False)
            bar.update(1)
    seconds = time.perf_counter() - started

    loss_after = evaluate()
    log(
        f"held-out loss after training:  {loss_after:.4f}  ({data.steps} steps in {seconds:.1f}s, {tokens / seconds:.0f} tokens/s)"
    )
    output = Path(recipe.output.dir)
    model.save_pretrained(output, format=recipe.output.format)
    log(f"saved adapter to {output} ({adapter_note(recipe, backend)})")
    if recipe.output.merge:
        merged_dir = output / "merged"
        model.merge_and_unload().save_pretrained(str(merged_dir))
        log(f"saved the merged model to {merged_dir} (load it with {MODEL_LIBRARIES.get(backend, backend)} alone)")
    return RunResult(
        backend=backend,
        losses=losses,
        eval_loss_before=loss_before,
        eval_loss_after=loss_after,
        trainable_params=trainable,
        all_params=total,
        steps=data.steps,
        seconds=seconds,
        tokens=tokens,
        train_examples=len(data.train),
        held_out_examples=len(data.held_out),
        output=output,
        model=model,
    )


def describe_method(recipe: Recipe, model: Any) -> str:
    """``LoRA r=8 alpha=16 on q_proj, v_proj``: the method and the modules it targets as
    ``model`` (the PeftModel) resolved them (the architecture's defaults where the recipe names none)."""
    config = model.peft_config[model.active_adapter]
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, (set, frozenset)):
        targets = sorted(targets)
    shown = f" on {', '.join(targets) if isinstance(targets, (list, tuple)) else targets}" if targets else ""
    if recipe.method == "lora":
        return f"LoRA r={config.r} alpha={config.lora_alpha:g}{shown}"
    return f"{recipe.method} ({type(config).__name__}){shown}"


def adapter_note(recipe: Recipe, backend: str) -> str:
    """What loads the adapter a run of ``recipe`` saves, in the recipe's format, whichever
    ``backend`` trained it: peftplug always, and the own loader of the library whose files the
    format writes, where that library has the method."""
    fmt, method = recipe.output.format, recipe.method
    note = f"format {fmt}; load it with peftplug.PeftModel.from_pretrained"
    if fmt not in FORMAT_LOADERS:
        return note
    library, loaders = FORMAT_LOADERS[fmt]
    loader = loaders.get(method, loaders.get(None))
    return f"{note} ({library} has no {method})" if loader is None else f"{note} or {library}'s {loader}"


def run_recipe(recipe: Recipe, log: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """Train as ``recipe`` says on its backend, save the adapter (and the merged model when
    ``output.merge``) and the report; return the :class:`RunResult`."""
    data = prepare_data(recipe)
    runner = importlib.import_module(RUNNERS[recipe.backend]) if recipe.backend in RUNNERS else None
    if runner is None:
        raise NotImplementedError(
            f"backend {recipe.backend!r} is registered but peftplug has no training runner for it"
        )
    for line in data.summary():
        log(line)
    result = runner.run(recipe, data, log=log, progress=progress)
    if recipe.output.report:
        path = Path(recipe.output.dir) / recipe.output.report
        path.write_text(json.dumps(result.report(recipe), indent=2) + "\n")
        log(f"wrote the report to {path}")
    return result
