"""DoRA for Paddle LoRA layers: the math of :mod:`peftplug.plugins.lora.torch_dora` in Paddle's
layout, where a Linear weight is ``[in, out]`` and an output row of the torch weight is a column::

    W' = (W + s A B) * m / n,   n = ||W + s A B|| per column (output),   m: [out], initialised to n
    x W' + b = x W + b + (m/n - 1) (x W) + (m/n) s (x A) B        (n detached)
"""

from __future__ import annotations

import paddle


def column_norms(weight: paddle.Tensor, delta: paddle.Tensor) -> paddle.Tensor:
    """``||weight + delta||`` of each output column; both ``[in, out]``."""
    return paddle.linalg.norm(weight + delta, p=2, axis=0)


def dora_output(
    x: paddle.Tensor,
    base_result: paddle.Tensor | None,
    weight: paddle.Tensor,
    a: paddle.Tensor,
    b: paddle.Tensor,
    magnitude: paddle.Tensor,
    scaling: float,
) -> paddle.Tensor:
    """What one DoRA adapter adds to the output for inputs ``x`` (already through dropout):
    ``(m/n - 1) x W + (m/n) s (x A) B``. ``weight`` is ``W`` ``[in, out]``; ``base_result`` is
    ``x W`` when the caller has it (no dropout), else it is computed from ``x``."""
    weight = weight.astype(x.dtype)
    norm = column_norms(weight, scaling * (a @ b).astype(x.dtype).detach()).detach()
    scale = magnitude / norm
    if base_result is None:
        base_result = x @ weight
    return (scale - 1) * base_result + scale * ((x @ a) @ b) * scaling
