"""The built-in training job behind ``peftplug train``: LoRA instruction tuning of a small
Llama-shaped model, on CPU, in well under two minutes.

The model is a ``transformers`` ``LlamaForCausalLM`` built from a ``LlamaConfig`` with random,
seeded weights (no download); the tokenizer is peftplug's :class:`~peftplug.tokenizer.ByteTokenizer`;
the data is the instruction set shipped with peftplug. LoRA goes in through
:func:`peftplug.get_peft_model`, a plain torch loop trains it with AdamW (loss on the response
tokens only), and the adapter is saved with ``save_pretrained`` in HF PEFT's format.

This module imports torch and transformers; the CLI imports it only for ``peftplug train``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import peftplug
from peftplug.instructions import (
    IGNORE_INDEX,
    EncodedExample,
    encode_all,
    load_instructions,
    split_examples,
)
from peftplug.tokenizer import ByteTokenizer
from peftplug.train_options import MAX_POSITIONS, TrainOptionError, TrainOptions

__all__ = [
    "TrainOptionError", "TrainOptions", "TrainResult", "build_base_model", "collate", "evaluate", "lora_config", "train",
]

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
HIDDEN_SIZE = 64


@dataclasses.dataclass
class TrainResult:
    """What a training run did: held-out loss before and after, sizes, time, where it saved,
    and the trained peftplug model itself (in eval mode)."""

    loss_before: float
    loss_after: float
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


def build_base_model(seed: int = 0, tokenizer: ByteTokenizer | None = None) -> torch.nn.Module:
    """The demo base model: a small random ``LlamaForCausalLM`` (hidden 64, 2 layers, 4 heads,
    2 kv heads, MLP 128, untied embeddings, eager attention), its weights drawn after
    ``torch.manual_seed(seed)``, so the same seed rebuilds the same model (e.g. to load the
    adapter in HF PEFT).

    Weights are drawn with std ``1/sqrt(hidden)`` (0.125) instead of Llama's 0.02: at width 64,
    0.02 gives layers that pass almost no signal, and LoRA on them learns very slowly.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or ByteTokenizer()
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=HIDDEN_SIZE ** -0.5,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def lora_config() -> peftplug.LoraConfig:
    """LoRA for the demo: r=8, alpha 16, on every attention and MLP projection."""
    return peftplug.LoraConfig(
        task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(TARGET_MODULES)
    )


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
    """(summed next-token cross-entropy over the labelled positions, number of them)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate(model: torch.nn.Module, examples: Sequence[EncodedExample], pad_token_id: int, batch_size: int = 32) -> float:
    """Mean cross-entropy per response token over ``examples`` (model put in eval mode)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = causal_lm_loss_sum(model, collate(examples[start:start + batch_size], pad_token_id))
        total, count = total + float(loss), count + n
    return total / max(count, 1)


def _batches(examples: Sequence[EncodedExample], batch_size: int, seed: int):
    """Endless shuffled batches, reshuffled each epoch with a seeded RNG."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            if len(chunk) < batch_size and len(order) >= batch_size:
                break  # drop the ragged tail so every step sees a full batch
            yield [examples[i] for i in chunk]


def _schedule(steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, steps - warmup))

    return factor


def train(options: TrainOptions | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Run the demo job and return its :class:`TrainResult`; ``log`` receives the report lines.

    Builds the seeded base model, wraps it with LoRA via :func:`peftplug.get_peft_model`,
    prints the trainable-parameter line and the held-out loss, trains ``options.steps`` AdamW
    steps (linear warmup, then linear decay to 10%, gradients clipped at 1.0) with a tqdm bar
    showing loss and tokens/s, prints the held-out loss again, and saves the adapter to
    ``options.output`` with ``save_pretrained``.
    """
    options = options or TrainOptions()
    options.validate()
    torch.set_num_threads(os.cpu_count() or 2)  # paddle may have left OMP_NUM_THREADS=1
    tokenizer = ByteTokenizer()
    examples = load_instructions(options.data)
    train_split, held_out_split = split_examples(examples)
    train_set = encode_all(tokenizer, train_split, options.max_length)
    held_out = encode_all(tokenizer, held_out_split, options.max_length)
    source = options.data or "the dataset shipped with peftplug"
    log(f"data: {len(train_set)} training / {len(held_out)} held-out examples from {source}")

    model = peftplug.get_peft_model(build_base_model(options.seed, tokenizer), lora_config())
    trainable, total = model.get_nb_trainable_parameters()
    log(f"model: random Llama (hidden 64, 2 layers), LoRA r=8 alpha=16 on {', '.join(TARGET_MODULES)}")
    log(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    pad = tokenizer.pad_token_id
    loss_before = evaluate(model, held_out, pad)
    log(f"held-out loss before training: {loss_before:.4f}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(options.steps))
    batches = _batches(train_set, options.batch_size, options.seed)
    model.train()
    tokens, started = 0, time.perf_counter()
    with tqdm(total=options.steps, desc="train", unit="step", disable=not options.progress, file=sys.stderr) as bar:
        for _ in range(options.steps):
            batch = collate(next(batches), pad)
            loss_sum, count = causal_lm_loss_sum(model, batch)
            loss = loss_sum / max(count, 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            tokens += int(batch["attention_mask"].sum())
            elapsed = time.perf_counter() - started
            bar.set_postfix({"loss": f"{loss.item():.3f}", "tok/s": f"{tokens / elapsed:.0f}"}, refresh=False)
            bar.update(1)
    seconds = time.perf_counter() - started

    loss_after = evaluate(model, held_out, pad)
    log(f"held-out loss after training:  {loss_after:.4f}  ({options.steps} steps in {seconds:.1f}s, {tokens / seconds:.0f} tokens/s)")
    output = Path(options.output)
    model.save_pretrained(output)
    log(f"saved adapter to {output} (load it with peftplug.PeftModel.from_pretrained or peft.PeftModel.from_pretrained)")
    return TrainResult(
        loss_before=loss_before,
        loss_after=loss_after,
        trainable_params=trainable,
        all_params=total,
        steps=options.steps,
        seconds=seconds,
        tokens=tokens,
        train_examples=len(train_set),
        held_out_examples=len(held_out),
        output=output,
        model=model,
    )
