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
import tp_common  # noqa: E402, F401  (re-exported for the workers and the tests)

LR = 0.05
RANKS = 2


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
