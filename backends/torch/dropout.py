"""Dropout for adapter inputs whose mask costs a fifth of ``nn.Dropout``'s on a CPU.

On a CPU that is not Intel's, torch draws a dropout mask one element at a time from its
Mersenne twister, then multiplies twice: for a LoRA layer's ``[tokens, in]`` input that costs a
fifth of the base layer's own product, a quarter of a training step over every module.
:class:`FastDropout` draws 64 random bits per four elements instead and compares each 16-bit
quarter with a threshold::

    u ~ uniform{0 .. 65535}       drop where u < round(p * 65536),  else keep and scale by 1 / (1 - p')

so each element is dropped independently with probability ``p' = round(p * 65536) / 65536``
(``p`` within 2**-17: 0.05 gives 0.0500031) and the kept ones are scaled by ``1 / (1 - p')``, so
the expectation is the input's. As with ``nn.Dropout``, the scaled mask is what backward keeps.
The random stream is torch's (``torch.manual_seed`` fixes it) but not ``nn.Dropout``'s: to
draw HF PEFT's exact masks (to compare the two libraries step by step), set
``PEFTPLUG_DROPOUT=torch``. Off the CPU, torch's fused kernel is used.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

DROPOUT_ENV = "PEFTPLUG_DROPOUT"
LEVELS = 1 << 16


def dropout_module(p: float) -> nn.Module:
    """The dropout of an adapter's input: :class:`FastDropout` (``nn.Dropout`` with
    ``PEFTPLUG_DROPOUT=torch``), or ``nn.Identity`` when ``p`` is 0."""
    if p <= 0:
        return nn.Identity()
    sampler = os.environ.get(DROPOUT_ENV, "fast")
    if sampler not in ("fast", "torch"):
        raise ValueError(f"{DROPOUT_ENV}={sampler!r}: expected 'fast' or 'torch'")
    return nn.Dropout(p) if sampler == "torch" else FastDropout(p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same ``train()`` / ``eval()``) with a mask drawn 16 bits an
    element; see the module's docstring for the exact probability."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with elements dropped and the rest scaled, in training; ``x`` itself otherwise."""
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p >= 1:
            return nn.functional.dropout(x, self.p, True, self.inplace)
        threshold = round(self.p * LEVELS)
        scaled_mask = keep_mask(x.shape, threshold, x.device).to(x.dtype).mul_(LEVELS / (LEVELS - threshold))
        return x * scaled_mask


def keep_mask(shape: torch.Size, threshold: int, device: torch.device) -> torch.Tensor:
    """Booleans of ``shape``, each False with probability ``threshold / 65536``, independently."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    quarters = words.view(torch.int16)[:count]  # uniform on -32768 .. 32767
    return (quarters >= threshold - LEVELS // 2).view(shape)
