"""One LoRA Linear as one autograd node: the base product and the adapter's two, and a backward
that does only the products LoRA needs.

For rows ``x`` ``[T, in]``, a frozen base ``W`` ``[out, in]`` (and bias), ``A`` ``[r, in]``,
``B`` ``[out, r]`` and scaling ``s``::

    forward:   h = x Aᵀ                  [T, r]     2 T r in   FLOPs
               y = x Wᵀ + b + s h Bᵀ      [T, out]   2 T r out  (accumulated into the base output)
    backward:  dh = s dy B               [T, r]     2 T r out
               dB = s dyᵀ h              [out, r]   2 T r out
               dA = dhᵀ x                [r, in]    2 T r in
               dx = dy W + dh A          [T, in]    2 T r in   (accumulated into the base's dx)

Composed from ``F.linear`` and ``addmm_``, autograd records the same products plus a scaling of
each of the two products' gradients, and adds the adapter's ``[T, in]`` input gradient to the base
layer's in a separate ``[T, in]`` sum; here ``s`` rides in the products' ``alpha`` and the
adapter's share of ``dx`` is accumulated in place. Gradients equal HF PEFT's to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LoraLinearFunction(torch.autograd.Function):
    """``x Wᵀ + b + s (x Aᵀ) Bᵀ`` over 2-D rows, with the backward in the module docstring."""

    @staticmethod
    def forward(ctx, rows, weight, bias, lora_a, lora_b, scaling: float):
        """The base output with the adapter's path added in place; saves ``x``, ``h`` and the weights."""
        hidden = F.linear(rows, lora_a)
        result = F.linear(rows, weight, bias)
        result.addmm_(hidden, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(rows, weight, lora_a, lora_b, hidden)
        ctx.scaling = scaling
        return result

    @staticmethod
    def backward(ctx, grad):
        """The gradients of whichever inputs need one (the base's only when it is trained)."""
        rows, weight, lora_a, lora_b, hidden = ctx.saved_tensors
        scaling = ctx.scaling
        need_rows, need_weight, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        grad_rows = grad_weight = grad_bias = grad_a = grad_b = None
        # beta=0: the first argument only gives the shape, and is ignored (NaNs in it included)
        grad_hidden = torch.addmm(hidden, grad, lora_b, beta=0, alpha=scaling)
        if need_b:
            grad_b = torch.addmm(lora_b, grad.t(), hidden, beta=0, alpha=scaling)
        if need_a:
            grad_a = grad_hidden.t().mm(rows)
        if need_rows:
            grad_rows = grad.mm(weight).addmm_(grad_hidden, lora_a)
        if need_weight:
            grad_weight = grad.t().mm(rows)
        if need_bias:
            grad_bias = grad.sum(0)
        return grad_rows, grad_weight, grad_bias, grad_a, grad_b, None
