"""One LoRA Linear as one autograd node: the base product and the adapter's two, and a backward
that does only the products LoRA needs.

For rows ``x`` ``[T, in]``, their dropout ``x'`` (``x`` itself without dropout), a frozen base
``W`` ``[out, in]`` (and bias), ``A`` ``[r, in]``, ``B`` ``[out, r]`` and scaling ``s``::

    forward:   h = x' Aᵀ                 [T, r]     2 T r in   FLOPs
               y = x Wᵀ + b + s h Bᵀ      [T, out]   2 T r out  (accumulated into the base output)
    backward:  dh = s dy B               [T, r]     2 T r out
               dB = s dyᵀ h              [out, r]   2 T r out
               dA = dhᵀ x'               [r, in]    2 T r in
               dx = dy W + dh A          [T, in]    2 T r in   (without dropout: accumulated into
                                                               the base's dx; with it, dx' = dh A
                                                               goes back through the dropout)

Composed from ``F.linear`` and ``addmm_``, autograd records the same products plus a scaling of
each of the two products' gradients, and adds the adapter's ``[T, in]`` input gradient to the base
layer's in a separate ``[T, in]`` sum; here ``s`` rides in the products' ``alpha`` and, without
dropout, the adapter's share of ``dx`` is accumulated in place. Gradients equal HF PEFT's to
rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LoraLinearFunction(torch.autograd.Function):
    """``x Wᵀ + b + s (x' Aᵀ) Bᵀ`` over 2-D rows (``dropped`` is ``x'``, None without dropout),
    with the backward in the module docstring."""

    @staticmethod
    def forward(ctx, rows, dropped, weight, bias, lora_a, lora_b, scaling: float):
        """The base output with the adapter's path added in place; saves what the backward reads."""
        lora_in = rows if dropped is None else dropped
        hidden = F.linear(lora_in, lora_a)
        result = F.linear(rows, weight, bias)
        result.addmm_(hidden, lora_b.t(), alpha=scaling)
        base_in = rows if ctx.needs_input_grad[2] else None  # read only for a trained base weight
        ctx.save_for_backward(base_in, lora_in, weight, lora_a, lora_b, hidden)
        ctx.scaling = scaling
        ctx.no_dropout = dropped is None
        return result

    @staticmethod
    def backward(ctx, grad):
        """The gradients of whichever inputs need one (the base's only when it is trained)."""
        base_in, lora_in, weight, lora_a, lora_b, hidden = ctx.saved_tensors
        scaling = ctx.scaling
        need_rows, need_dropped, need_weight, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        grads = dict.fromkeys(("rows", "dropped", "weight", "bias", "a", "b"))
        # beta=0: the first argument only gives the shape, and is ignored (NaNs in it included)
        grad_hidden = torch.addmm(hidden, grad, lora_b, beta=0, alpha=scaling)
        if need_b:
            grads["b"] = torch.addmm(lora_b, grad.t(), hidden, beta=0, alpha=scaling)
        if need_a:
            grads["a"] = grad_hidden.t().mm(lora_in)
        if need_rows:
            grads["rows"] = grad.mm(weight)
            if ctx.no_dropout:
                grads["rows"].addmm_(grad_hidden, lora_a)
        if need_dropped:
            grads["dropped"] = grad_hidden.mm(lora_a)
        if need_weight:
            grads["weight"] = grad.t().mm(base_in)
        if need_bias:
            grads["bias"] = grad.sum(0)
        return (*grads.values(), None)
