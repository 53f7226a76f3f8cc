"""What peftplug's LoRA adds to a frozen base's training step on Paddle, counted (not timed):
matrix-product FLOPs, operator calls and bytes allocated at the analytic minimum of
``benchmarks/paddle_work.py``'s ``lora_minimum``, peak live bytes within it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from repo_root import ROOT

import peftplug

pytest.importorskip("paddle")  # paddle_work imports it (the transformers 5 run has no Paddle)
sys.path.insert(0, str(ROOT / "benchmarks"))
from paddle_work import (  # noqa: E402
    count_step,
    embedding_output_takes_gradient,
    lora_minimum,
    lora_shapes,
    training_step,
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def counted_step(paddle, model, input_ids):
    """The counts of one training step of ``model`` (AdamW on its trainable parameters, if any),
    its input embeddings' output taking a gradient, after an uncounted step."""
    model.train()
    embedding_output_takes_gradient(model)
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=trainable) if trainable else None
    step = training_step(model, input_ids, optimizer)
    step()
    return count_step(step)


@pytest.fixture
def adapter_work(paddle, make_paddle_model):
    """(what LoRA r=4 on every linear layer adds to the frozen base's step, the minimum)."""
    input_ids = paddle.to_tensor(np.random.default_rng(1).integers(3, 128, size=(2, 8)), dtype="int64")
    base = make_paddle_model("llama")
    for parameter in base.parameters():
        parameter.stop_gradient = True
    lora = peftplug.get_peft_model(
        make_paddle_model("llama"),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=TARGETS),
    )
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:  # nonzero, as after training
            parameter.set_value(np.full(parameter.shape, 0.01, dtype="float32"))
    added = counted_step(paddle, lora, input_ids) - counted_step(paddle, base, input_ids)
    return added, lora_minimum(lora_shapes(lora), tokens=input_ids.size)


def test_lora_adds_the_minimum_of_products_calls_and_bytes(adapter_work):
    added, minimum = adapter_work
    assert added.flops == minimum.flops
    assert added.total_calls == minimum.total_calls, dict(added.calls)
    assert added.allocated_bytes == minimum.allocated_bytes


def test_lora_keeps_no_more_live_than_its_hidden(adapter_work):
    added, minimum = adapter_work
    assert added.peak_live_bytes <= minimum.peak_live_bytes
