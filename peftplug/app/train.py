"""The built-in training job behind ``peftplug train``: LoRA instruction tuning of a small
Llama-shaped model, on CPU, in well under two minutes.

The job is the embedded default recipe (:data:`peftplug.app.recipe.DEFAULT_RECIPE`) with the
:class:`TrainOptions` put over it, run by the default backend's recipe runner (PyTorch's:
:mod:`peftplug.backends.torch.recipe`): a ``transformers`` ``LlamaForCausalLM`` built from a
``LlamaConfig`` with random, seeded weights (no download), peftplug's
:class:`~peftplug.app.tokenizer.ByteTokenizer`, the instruction set shipped with peftplug, LoRA
through :func:`peftplug.get_peft_model`, a plain AdamW loop (loss on the response tokens only),
and ``save_pretrained`` in HF PEFT's format.

Importing this module imports no framework; building the model and training do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import peftplug
from peftplug.app.backend_parts import model_builder
from peftplug.app.recipe import DEFAULT_BACKEND, TINY_ARCHITECTURES, ModelSpec, load_recipe
from peftplug.app.recipe_loop import RunResult
from peftplug.app.recipe_run import run_recipe
from peftplug.app.tokenizer import ByteTokenizer
from peftplug.app.train_options import TrainOptionError, TrainOptions, apply_options

__all__ = [
    "RunResult",
    "TrainOptionError",
    "TrainOptions",
    "build_base_model",
    "lora_config",
    "train",
]

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
HIDDEN_SIZE = TINY_ARCHITECTURES["llama"].defaults["hidden_size"]


def build_base_model(seed: int = 0, tokenizer: ByteTokenizer | None = None) -> Any:
    """The demo base model on the default backend: a small random ``LlamaForCausalLM`` (hidden
    64, 2 layers, 4 heads, 2 kv heads, MLP 128, untied embeddings, eager attention), its weights
    drawn from ``seed``, so the same seed rebuilds the same model (e.g. to load the saved adapter
    onto). It is the default recipe's ``model: {architecture: llama}``.

    Weights are drawn with std ``1/sqrt(hidden)`` (0.125) instead of Llama's 0.02: at width 64,
    0.02 gives layers that pass almost no signal, and LoRA on them learns very slowly.
    """
    spec = ModelSpec("llama", None, dict(TINY_ARCHITECTURES["llama"].defaults), seed)
    return model_builder(DEFAULT_BACKEND).build(spec, tokenizer or ByteTokenizer())


def lora_config() -> peftplug.LoraConfig:
    """LoRA for the demo: r=8, alpha 16, on every attention and MLP projection."""
    return peftplug.LoraConfig(
        task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(TARGET_MODULES)
    )


def train(options: TrainOptions | None = None, log: Callable[[str], None] = print) -> RunResult:
    """Run the demo job and return its :class:`~peftplug.app.recipe_loop.RunResult`; ``log`` receives
    the report lines.

    Builds the seeded base model, wraps it with LoRA via :func:`peftplug.get_peft_model`,
    prints the trainable-parameter line and the held-out loss, trains ``options.steps`` AdamW
    steps (linear warmup, then linear decay to 10%, gradients clipped at 1.0) with a tqdm bar
    showing loss and tokens/s, prints the held-out loss again, and saves the adapter and
    ``train_report.json`` to ``options.output``.
    """
    options = options or TrainOptions()
    options.validate()
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "progress"}
    recipe = apply_options(load_recipe(None, backend=DEFAULT_BACKEND), fields)
    return run_recipe(recipe, log=log, progress=options.progress)
