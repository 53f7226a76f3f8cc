"""The training loop every backend's recipe runner shares, and the report of a run.

A runner (declared by its backend, see :mod:`peftplug.app.backend_parts`) builds and wraps the
model and supplies one optimizer step and a held-out loss; :func:`train_and_save` does the rest
the same way on every framework: parameter counts, held-out loss before and after, the steps
under a progress bar, the save in the recipe's format (and the merged model), the log lines.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftplug.app.backend_parts import model_builder
from peftplug.app.instructions import EncodedExample
from peftplug.app.recipe_data import batch_order

if TYPE_CHECKING:
    from peftplug.app.recipe import Recipe
    from peftplug.app.recipe_run import PreparedData

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


def held_out_loss(
    loss_sum: Callable[[Sequence[EncodedExample]], tuple[Any, int]],
    examples: Sequence[EncodedExample],
    batch_size: int = 32,
) -> float:
    """Mean loss per response token over ``examples``, in batches of ``batch_size``;
    ``loss_sum(batch)`` gives a batch's summed loss and its number of response tokens."""
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = loss_sum(examples[start : start + batch_size])
        total, count = total + float(loss), count + n
    return total / max(count, 1)


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
    main_process: bool = True,
) -> RunResult:
    """The framework-free part of a runner, for ``model`` of ``backend``: the parameter counts
    and the held-out loss (``evaluate()``) logged, then, in training mode, ``data.steps`` calls of
    ``step`` (one optimizer step on a batch of examples, returning its loss and its non-padding
    tokens) under a tqdm bar with loss and tokens/s, the held-out loss after, the adapter saved
    in the recipe's format (and the merged model when ``output.merge``), each with what loads it.
    Across processes every rank calls it; only ``main_process`` writes the adapter of a replicated
    model (a sharded one is saved by every rank together, rank 0 writing)."""
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
    model.save_pretrained(output, format=recipe.output.format, is_main_process=main_process)
    log(f"saved adapter to {output} ({adapter_note(recipe, backend)})")
    if recipe.output.merge:
        merged_dir = output / "merged"
        model.merge_and_unload().save_pretrained(str(merged_dir))
        library = model_builder(backend).library
        log(f"saved the merged model to {merged_dir} (load it with {library} alone)")
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
