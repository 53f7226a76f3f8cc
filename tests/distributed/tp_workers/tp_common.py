"""What the tensor-parallel tests and their torchrun workers share: the tiny Llama, its data,
its tensor-parallel plan, and a few training steps (kept identical on both sides)."""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COLUMN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROW = ("self_attn.o_proj", "mlp.down_proj")
STEPS = 3
LR = 0.2


def build_llama(torch):
    """The tiny Llama (hidden 64, 2 layers, 4 heads, 2 kv heads), seed 0, eager attention."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    return transformers.LlamaForCausalLM(config).eval()


def shard(torch, model, mesh):
    """DTensor tensor parallelism on attention (q, k, v column, o row) and MLP (gate, up
    column, down row) of every layer."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = {}
    for index in range(len(model.model.layers)):
        plan.update({f"model.layers.{index}.{name}": ColwiseParallel() for name in COLUMN})
        plan.update({f"model.layers.{index}.{name}": RowwiseParallel() for name in ROW})
    parallelize_module(model, mesh, plan)
    return model


def batches(torch):
    """(training batch, evaluation batch) of token ids."""
    generator = torch.Generator().manual_seed(1)
    train = torch.randint(3, 128, (2, 8), generator=generator)
    evaluate = torch.randint(3, 128, (2, 8), generator=generator)
    return train, evaluate


def train(torch, model, ids) -> list[float]:
    """``STEPS`` plain SGD steps on the causal-LM loss; the losses."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = []
    for _ in range(STEPS):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def logits(torch, model, ids):
    """Logits without gradients, as a numpy array."""
    with torch.no_grad():
        return model(input_ids=ids).logits.float().numpy()


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON (results a worker hands back to the test)."""
    Path(path).write_text(json.dumps(data))


def run_on_every_rank(job) -> None:
    """Run ``job()`` on this rank of an initialised torch job and leave the process: exit 1 with
    the traceback when it raises, else wait for every rank, then exit 0 without interpreter
    teardown. (gloo's threads, torn down by the interpreter while a peer still runs, abort with
    "terminate called without an active exception", seen once in CI.)"""
    import os
    import sys
    import traceback

    import torch.distributed as dist

    try:
        job()
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
