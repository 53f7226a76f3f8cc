"""The PyTorch backend's recipe runner: transformers builds the base, a plain torch loop trains.

Declared as the torch backend's ``recipe_runner``; :func:`peftplug.app.recipe_run.run_recipe`
imports it for ``backend: torch`` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

import peftplug
from peftplug.app.instructions import IGNORE_INDEX, EncodedExample
from peftplug.app.recipe import TINY_ARCHITECTURES, ModelSpec, Recipe
from peftplug.app.recipe_data import lr_schedule
from peftplug.app.recipe_loop import RunResult, describe_method, held_out_loss, train_and_save
from peftplug.app.recipe_run import PreparedData
from peftplug.backends.torch.app_models import MODELS


def describe_model(spec: ModelSpec) -> str:
    """``random Llama (hidden 64, 2 layers)`` or the directory."""
    if spec.path is not None:
        return f"{spec.path}"
    config = spec.config
    hidden = config.get("hidden_size", config.get("n_embd"))
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    return f"{TINY_ARCHITECTURES[spec.architecture].description} (hidden {hidden}, {layers} layers)"


def collate(batch: Sequence[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` (pad id), ``attention_mask`` (0 on padding), and
    ``labels`` (-100 on the prompt and on padding)."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def causal_lm_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy over the labelled positions, number of them). Logits of
    virtual tokens that a prompt-learning adapter puts in front are left out."""
    length = batch["input_ids"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -length:]
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, examples: Sequence[EncodedExample], pad_token_id: int, batch_size: int = 32
) -> float:
    """Mean cross-entropy per response token over ``examples`` (model put in eval mode)."""
    model.eval()
    return held_out_loss(lambda batch: causal_lm_loss_sum(model, collate(batch, pad_token_id)), examples, batch_size)


def run(recipe: Recipe, data: PreparedData, log: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """Build, adapt, evaluate, train ``data.steps`` AdamW steps (warmup then linear decay to
    10%, gradients clipped at 1.0; tqdm bar with loss and tokens/s), evaluate, save. With a
    ``distributed`` engine, on every rank of the job (:mod:`peftplug.backends.torch.distributed_recipe`)."""
    job = None
    if recipe.distributed.engine is not None and recipe.distributed.processes > 1:
        from peftplug.backends.torch.distributed_recipe import DataParallelJob

        job = DataParallelJob(recipe.distributed.engine)
    else:
        torch.set_num_threads(os.cpu_count() or 2)  # paddle may have left OMP_NUM_THREADS=1
    training = recipe.training
    model = peftplug.get_peft_model(MODELS.build(recipe.model, data.tokenizer), recipe.method_config)
    log(f"model: {describe_model(recipe.model)} on PyTorch, {describe_method(recipe, model)}")
    forward = job.wrap(model) if job is not None else model
    pad = data.tokenizer.pad_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=training.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(data.steps))
    total = job.total if job is not None else (lambda value: value)
    ranks = job.world if job is not None else 1

    def step(examples: list[EncodedExample]) -> tuple[float, int]:
        batch = collate(job.share(examples) if job is not None else examples, pad)
        loss_sum, count = causal_lm_loss_sum(forward, batch)
        everywhere = max(total(count), 1)
        # the engines average gradients over the ranks: each rank's share of the global mean, times ranks
        loss = loss_sum * ranks / everywhere
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        return total(loss_sum.item()) / everywhere, int(total(int(batch["attention_mask"].sum())))

    result = train_and_save(
        model,
        recipe,
        data,
        backend="torch",
        step=step,
        evaluate=lambda: evaluate(model, data.held_out, pad),
        log=log,
        progress=progress,
        main_process=job is None or job.rank == 0,
    )
    if job is not None:
        job.close()
    return result
