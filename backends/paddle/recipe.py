"""The PaddlePaddle backend's recipe runner: PaddleNLP builds the base, a plain Paddle loop trains.

Declared as the paddle backend's ``recipe_runner``; :func:`peftplug.app.recipe_run.run_recipe`
imports it for ``backend: paddle`` only. The loop is the torch runner's step for step (same
batches, AdamW, warmup-then-decay schedule, clipping at 1.0, loss on the response tokens). A
built-in architecture gets the torch builder's weights for the same seed (see
:mod:`peftplug.backends.paddle.app_models`), and the adapter the same initial values, so the same
recipe on either backend starts from the same model and its losses track each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import paddle

import peftplug
from peftplug.app.instructions import IGNORE_INDEX, EncodedExample
from peftplug.app.recipe import Recipe
from peftplug.app.recipe_data import lr_schedule
from peftplug.app.recipe_loop import RunResult, describe_method, held_out_loss, train_and_save
from peftplug.app.recipe_run import PreparedData
from peftplug.backends.paddle.app_models import MODELS, twin_builder


def twin_initial_adapter(recipe: Recipe, tokenizer: Any, base: Any) -> Any:
    """The adapter state the torch runner starts from for ``recipe`` (same seed, same draws),
    moved to the PaddleNLP ``base``'s module tree and conventions as a state read from HF PEFT
    files is, or None when torch is not installed or the base is a directory."""
    twin = twin_builder()
    if recipe.model.path is not None or twin is None:
        return None
    from peftplug.interop.cross_framework import state_for_model

    state = peftplug.get_peft_model(twin.build(recipe.model, tokenizer), recipe.method_config).adapter_state()
    return state_for_model(state, base, "peft")


def collate(batch: Sequence[EncodedExample], pad_token_id: int) -> dict[str, paddle.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding)."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = np.full((len(batch), width), pad_token_id, dtype=np.int64)
    labels = np.full((len(batch), width), IGNORE_INDEX, dtype=np.int64)
    attention_mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = item.input_ids
        labels[row, :length] = item.labels
        attention_mask[row, :length] = 1
    return {
        name: paddle.to_tensor(array)
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask), ("labels", labels))
    }


def causal_lm_loss_sum(model: Any, batch: dict[str, paddle.Tensor]) -> tuple[paddle.Tensor, int]:
    """(summed next-token cross-entropy over the labelled positions, their number). PaddleNLP
    models do not shift labels, so the shift is done here, as the torch runner does."""
    length = batch["input_ids"].shape[1]
    output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = (output[0] if isinstance(output, (tuple, list)) else output.logits)[:, -length:]
    targets = batch["labels"][:, 1:].reshape([-1])
    scores = logits[:, :-1].reshape([-1, logits.shape[-1]]).astype("float32")
    loss = paddle.nn.functional.cross_entropy(scores, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).astype("int64").sum())


def evaluate(model: Any, examples: Sequence[EncodedExample], pad_token_id: int, batch_size: int = 32) -> float:
    """Mean cross-entropy per response token over ``examples`` (model put in eval mode)."""
    model.eval()
    with paddle.no_grad():
        return held_out_loss(
            lambda batch: causal_lm_loss_sum(model, collate(batch, pad_token_id)), examples, batch_size
        )


def run(recipe: Recipe, data: PreparedData, log: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """Build, adapt, evaluate, train, evaluate, save: the torch runner's job on Paddle."""
    paddle.base.core.set_num_threads(os.cpu_count() or 2)
    training = recipe.training
    base = MODELS.build(recipe.model, data.tokenizer)
    initial = twin_initial_adapter(recipe, data.tokenizer, base)
    model = peftplug.get_peft_model(base, recipe.method_config)
    if initial is not None:
        model.load_adapter_state(initial, model.active_adapter)
    shape = (
        recipe.model.path
        or f"random PaddleNLP Llama (hidden {recipe.model.config['hidden_size']}, "
        f"{recipe.model.config['num_hidden_layers']} layers)"
    )
    log(f"model: {shape} on Paddle, {describe_method(recipe, model)}")
    pad = data.tokenizer.pad_token_id
    schedule = paddle.optimizer.lr.LambdaDecay(learning_rate=training.lr, lr_lambda=lr_schedule(data.steps))
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=[p for p in model.parameters() if not p.stop_gradient],
        weight_decay=0.0,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0),
    )

    def step(examples: list[EncodedExample]) -> tuple[float, int]:
        batch = collate(examples, pad)
        loss_sum, count = causal_lm_loss_sum(model, batch)
        loss = loss_sum / max(count, 1)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        return float(loss), int(batch["attention_mask"].sum())

    return train_and_save(
        model,
        recipe,
        data,
        backend="paddle",
        step=step,
        evaluate=lambda: evaluate(model, data.held_out, pad),
        log=log,
        progress=progress,
    )
