"""What the Paddle tensor-parallel test and its worker share: the tiny PaddleNLP Llama's shape,
the adapters' targets and each tensor's split axis in HF PEFT's layout. Imports no framework:
the test builds the full adapters with numpy alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 128, 2, 4, 2, 128
RANK = 4
ALPHA = 8
DEGREE = 2
COLUMN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROW = ("self_attn.o_proj", "mlp.down_proj")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IA3_TARGETS = ["q_proj", "o_proj", "up_proj", "down_proj"]
IA3_FEEDFORWARD = ["up_proj", "down_proj"]
PREFIX = "base_model.model.llama.layers."


def features(module: str) -> tuple[int, int]:
    """(in, out) of ``module`` (``self_attn.q_proj``, ...) in the whole model."""
    head_dim = HIDDEN // HEADS
    return {
        "self_attn.q_proj": (HIDDEN, HIDDEN),
        "self_attn.k_proj": (HIDDEN, KV_HEADS * head_dim),
        "self_attn.v_proj": (HIDDEN, KV_HEADS * head_dim),
        "self_attn.o_proj": (HIDDEN, HIDDEN),
        "mlp.gate_proj": (HIDDEN, INTERMEDIATE),
        "mlp.up_proj": (HIDDEN, INTERMEDIATE),
        "mlp.down_proj": (INTERMEDIATE, HIDDEN),
    }[module]


def module_of(key: str) -> str:
    """``base_model.model.llama.layers.0.self_attn.q_proj.lora_A.weight`` -> ``self_attn.q_proj``."""
    parts = key[len(PREFIX) :].split(".")
    return ".".join(parts[1:3])


def lora_axis(key: str) -> int | None:
    """HF PEFT layout: column-parallel splits lora_B on axis 0, row-parallel lora_A on axis 1."""
    row = module_of(key) in ROW
    if ".lora_A." in key:
        return 1 if row else None
    return None if row else 0


def ia3_axis(key: str) -> int | None:
    """HF PEFT layout: a column-parallel output vector [out, 1] on axis 0, a row-parallel input
    vector [1, in] on axis 1; the others whole."""
    module = module_of(key)
    feedforward = module.rsplit(".", 1)[-1] in IA3_FEEDFORWARD
    if module in ROW:
        return 1 if feedforward else None
    return None if feedforward else 0


def lora_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A full LoRA adapter (every matrix non-zero), HF PEFT keys and layout."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(LAYERS):
        for module in COLUMN + ROW:
            fan_in, fan_out = features(module)
            key = f"{PREFIX}{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((RANK, fan_in)) * 0.1).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((fan_out, RANK)) * 0.1).astype(np.float32)
    return tensors


def ia3_tensors(seed: int = 1) -> dict[str, np.ndarray]:
    """A full IA3 adapter (vectors away from 1), HF PEFT keys and layout."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(LAYERS):
        for module in COLUMN + ROW:
            leaf = module.rsplit(".", 1)[-1]
            if leaf not in IA3_TARGETS:
                continue
            fan_in, fan_out = features(module)
            shape = (1, fan_in) if leaf in IA3_FEEDFORWARD else (fan_out, 1)
            tensors[f"{PREFIX}{layer}.{module}.ia3_l"] = (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    return tensors


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON (results a worker hands back to the test)."""
    Path(path).write_text(json.dumps(data))


def run_and_report(job, out: Path, rank: int, result: dict) -> None:
    """Run ``job()`` on this rank and leave the process: exit 1 with the traceback when it raises,
    else write ``result`` to OUT/rank<r>.json and exit 0 (without interpreter teardown)."""
    import os
    import sys
    import traceback

    try:
        job()
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    write_json(out / f"rank{rank}.json", result)
    sys.stdout.flush()
    os._exit(0)
