"""PiSSA and OLoRA for Paddle LoRA Linear layers: HF PEFT's math (see
:mod:`peftplug.plugins.lora.torch_base_weight_init`) on Paddle's ``[in, out]`` weight, taken as
HF PEFT's ``[out, in]`` by transposing, with A and B stored in Paddle's layout (``[in, r]``,
``[r, out]``). The factorisations are Paddle's own, so a singular or QR vector may have the
opposite sign of torch's (its partner's sign flips with it): ``B A`` and the residual are HF PEFT's.
"""

from __future__ import annotations

import paddle

from peftplug.plugins.lora.config import refuse_base_weight_init_of_dtype

HALF_OR_FULL = (paddle.float32, paddle.float16, paddle.bfloat16)


def init_from_base_weight(layer, adapter_name: str, init: str, module_name: str) -> None:
    """Initialise ``layer``'s adapter ``adapter_name`` by ``init`` (``pissa``, ``pissa_niter_<N>``,
    ``olora``) and subtract it from the base weight."""
    weight = layer.base_layer.weight
    refuse_base_weight_init_of_dtype(init, module_name, weight.dtype, weight.dtype in HALF_OR_FULL)
    r, scaling = layer.r[adapter_name], layer.scaling[adapter_name]
    with paddle.no_grad():
        out_in = weight.astype(paddle.float32).T
        a, b = _olora(out_in, r) if init == "olora" else _pissa(out_in, r, scaling, init)
        adapter_dtype = layer.lora_A[adapter_name].dtype
        layer.lora_A[adapter_name].set_value(a.T.astype(adapter_dtype))
        layer.lora_B[adapter_name].set_value(b.T.astype(adapter_dtype))
        weight.set_value((out_in - scaling * (b @ a)).T.astype(weight.dtype))


def _pissa(weight: paddle.Tensor, r: int, scaling: float, init: str) -> tuple[paddle.Tensor, paddle.Tensor]:
    if init == "pissa":
        v, singular, uh = paddle.linalg.svd(weight, full_matrices=False)
        v, singular, uh = v[:, :r], singular[:r] / scaling, uh[:r]
    else:
        v, singular, u = paddle.linalg.svd_lowrank(weight, q=r, niter=int(init.split("_niter_")[-1]))
        singular, uh = singular / scaling, u.T
    root = paddle.diag(paddle.sqrt(singular))
    return root @ uh, v @ root


def _olora(weight: paddle.Tensor, r: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    q, upper = paddle.linalg.qr(weight)
    return upper[:r], q[:, :r]
