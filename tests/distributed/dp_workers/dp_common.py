"""What the data-parallel tests (FSDP2, DDP) and their torchrun workers share: the global batch,
each rank's half of it, and one AdamW step that reports the loss and the adapter's gradients.

The tiny Llama and the initial adapter are the tensor-parallel tests' (:mod:`tp_common`). Every
sequence has the same length and no padding, so the mean of the two ranks' losses is the loss of
the global batch, and gradients averaged over the ranks (as FSDP2 and DDP reduce them) are the
global batch's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tp_workers"))
import tp_common  # noqa: E402  (also used by the workers and the tests through this module)

LR = 0.05
RANKS = 2


def initial_adapter(torch, directory) -> None:
    """The tensor-parallel tests' LoRA on every projection, with random A and B (seed 2), saved
    in ``directory``."""
    import peftplug

    model = peftplug.get_peft_model(
        tp_common.build_llama(torch),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=tp_common.TARGETS),
    )
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(directory)


def global_batch(torch):
    """(training batch of 4 sequences, evaluation batch of 2) of token ids."""
    generator = torch.Generator().manual_seed(5)
    return torch.randint(3, 128, (4, 8), generator=generator), torch.randint(3, 128, (2, 8), generator=generator)


def rank_batch(ids, rank: int, world: int = RANKS):
    """Rank ``rank``'s contiguous share of the global batch ``ids``."""
    share = ids.shape[0] // world
    return ids[rank * share : (rank + 1) * share]


def adapter_gradients(model, whole) -> dict:
    """The trainable parameters' gradients by name, as numpy (``whole`` turns a sharded one
    into the whole tensor: a collective)."""
    return {
        name: whole(parameter.grad).detach().float().numpy()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter.grad is not None
    }


def adamw_step(torch, model, ids, whole=lambda grad: grad, average=lambda loss: loss):
    """One AdamW step on the causal-LM loss of ``ids``: (loss as ``average`` reports it, the
    gradients before the step)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    gradients = adapter_gradients(model, whole)
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
    return float(average(loss.detach())), gradients


def trainer_arguments(output_dir) -> dict:
    """``TrainingArguments`` of the Trainer runs: 2 steps over the 4-row global batch (4 rows a
    step: 4 on one process, 2 per rank on two), a checkpoint after each, no shuffling noise in
    what a step sees (every step sees all 4 rows)."""
    return {
        "output_dir": str(output_dir),
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "per_device_train_batch_size": 4 // RANKS,
        "learning_rate": LR,
        "report_to": [],
        "use_cpu": True,
        "save_only_model": True,
        "seed": 0,
        "disable_tqdm": True,
    }
