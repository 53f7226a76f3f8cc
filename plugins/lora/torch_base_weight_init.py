"""PiSSA and OLoRA for torch LoRA Linear (and GPT-2 Conv1D) layers: A and B taken from the base weight, which keeps
the residual, so the adapted layer starts out equal to the base one. HF PEFT's math, step for step.

For the base weight ``W`` as ``[out, in]``, rank ``r`` and scaling ``s``:

- ``pissa``: ``W = V S U^T`` (full SVD); ``A = sqrt(S_r / s) U_r^T``, ``B = V_r sqrt(S_r / s)``;
- ``pissa_niter_<N>``: the same from ``torch.svd_lowrank(W, r, niter=N)`` (randomised);
- ``olora``: ``W = Q R`` (QR of the stored weight); ``A = R_r``, ``B = Q_r``;

then ``W <- W - s B A``.
"""

from __future__ import annotations

import torch

from peftplug.plugins.lora.config import refuse_base_weight_init, refuse_base_weight_init_of_dtype

HALF_OR_FULL = (torch.float32, torch.float16, torch.bfloat16)


def init_from_base_weight(layer, adapter_name: str, init: str, module_name: str) -> None:
    """Initialise ``layer``'s adapter ``adapter_name`` by ``init`` (``pissa``, ``pissa_niter_<N>``,
    ``olora``) and subtract it from the base weight."""
    weight = layer.base_layer.weight
    refuse_base_weight_init_of_dtype(init, module_name, weight.dtype, weight.dtype in HALF_OR_FULL)
    if init == "olora" and layer.fan_in_fan_out:
        refuse_base_weight_init(
            init, module_name, "a Conv1D (weight stored [in, out]), whose QR factors do not fit A and B"
        )
    r, scaling = layer.r[adapter_name], layer.scaling[adapter_name]
    with torch.no_grad():
        if init == "olora":
            a, b = _olora(weight.to(torch.float32), r)
        else:
            a, b = _pissa(layer._weight_out_in().to(torch.float32), r, scaling, init)
        layer.lora_A[adapter_name].weight.data = a
        layer.lora_B[adapter_name].weight.data = b
        residual = layer._weight_out_in().to(torch.float32) - scaling * b @ a
        residual = residual.to(weight.dtype)
        weight.data = residual.T if layer.fan_in_fan_out else residual


def _pissa(weight: torch.Tensor, r: int, scaling: float, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    if init == "pissa":
        v, singular, uh = torch.linalg.svd(weight, full_matrices=False)
        v, singular, uh = v[:, :r], singular[:r] / scaling, uh[:r]
    else:
        v, singular, u = torch.svd_lowrank(weight, r, niter=int(init.split("_niter_")[-1]))
        singular, uh = singular / scaling, u.t()
    root = torch.diag(torch.sqrt(singular))
    return root @ uh, v @ root


def _olora(weight: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    q, upper = torch.linalg.qr(weight)
    return upper[:r].contiguous(), q[:, :r].contiguous()
