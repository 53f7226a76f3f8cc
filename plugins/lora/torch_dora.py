"""DoRA (weight-decomposed low-rank adaptation, Liu et al. 2024) for torch LoRA layers, computed
as HF PEFT computes it, so that its adapters and ours give the same outputs.

The adapted weight is a learned magnitude times a direction::

    W' = m * (W + s B A) / n,   n = ||W + s B A|| per output row,   m: [out], initialised to n

so ``W' x + b = base(x) + (m/n - 1) W x + (m/n) s B A x``. The norm ``n`` is recomputed every
forward from the current ``B A`` but detached, as the paper's section 4.3 advises and HF PEFT
does. Merging folds ``W'`` into the weight and keeps ``n`` to divide it back out on unmerge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoraMagnitude(nn.Module):
    """The magnitude vector ``m`` of one adapter, as HF PEFT names it (``lora_magnitude_vector.<adapter>.weight``)."""

    def __init__(self, magnitude: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(magnitude)


def row_norms(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``||weight + delta||`` of each output row; both ``[out, in]``."""
    combined = weight + delta
    return torch.linalg.norm(combined, dim=1).to(combined.dtype)


def dora_output(
    x: torch.Tensor,
    base_result: torch.Tensor | None,
    weight: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    magnitude: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """What one DoRA adapter adds to the output for input rows ``x`` (already through dropout):
    ``(m/n - 1) W x + (m/n) s B A x``. ``weight`` is ``W`` as ``[out, in]``; ``base_result`` is
    ``W x`` when the caller has it (no dropout), else it is computed from ``x``."""
    weight = weight.to(x.dtype)
    norm = row_norms(weight, scaling * (b @ a).to(x.dtype).detach()).detach()
    scale = (magnitude / norm).view(1, -1)
    if base_result is None:
        base_result = F.linear(x, weight)
    return (scale - 1) * base_result + scale * F.linear(F.linear(x, a), b) * scaling
