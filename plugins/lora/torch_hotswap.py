"""Hot-swapping LoRA weights into a loaded PyTorch model, as HF PEFT's ``peft.utils.hotswap``.

A server that keeps one model in memory (``torch.compile``d, often) swaps the adapter it serves
by copying the new adapter's tensors into the parameters already there: no module is added or
replaced, so a compiled model is not compiled again. Two things would still make it recompile,
and :func:`prepare_model_for_compiled_hotswap` (called before ``torch.compile``) removes both:

- ranks: an adapter of another rank has other shapes; padding every adapter to ``target_rank``
  with zeros (rows of ``A``, columns of ``B``, which add nothing) lets any rank up to it in;
- scalings: ``alpha / r`` is a Python number, which compiled code holds as a constant; kept as a
  0-d tensor instead, a new adapter's scaling is written into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from peftplug.model.peft_model import KEY_PREFIX
from peftplug.plugins.lora.config import LoraConfig
from peftplug.plugins.lora.torch_layers import LoraLinear


def prepare_model_for_compiled_hotswap(
    model: Any, *, target_rank: int | None = None, config: Any = None, check_compiled: str = "error"
) -> None:
    """Make later :func:`hotswap_adapter` calls compile nothing: pad every LoRA adapter to
    ``target_rank`` (default: the largest rank in the model, or in ``config``) and keep each
    scaling as a tensor. Call it before ``torch.compile``; on a compiled model
    ``check_compiled`` ``"error"`` refuses, ``"warn"`` warns, ``"ignore"`` goes on."""
    if check_compiled not in ("error", "warn", "ignore"):
        raise ValueError(f"check_compiled must be 'error', 'warn' or 'ignore', not {check_compiled!r}")
    if hasattr(model, "_orig_mod"):
        message = "prepare_model_for_compiled_hotswap must run before torch.compile, on the uncompiled model"
        if check_compiled == "error":
            raise ValueError(message)
        if check_compiled == "warn":
            import warnings

            warnings.warn(message, stacklevel=2)
    layers = _lora_layers(model)
    ranks = [layer.lora_A[name].weight.shape[0] for layer in layers.values() for name in layer.lora_A]
    configs = config.values() if isinstance(config, dict) else [config] if config is not None else []
    for extra in configs:
        ranks += [extra.r, *(extra.rank_pattern or {}).values()]
    rank = target_rank if target_rank is not None else max(ranks, default=0)
    for module_name, layer in layers.items():
        for name in list(layer.lora_A):
            current = layer.lora_A[name].weight.shape[0]
            if current > rank:
                raise ValueError(
                    f"target_rank={rank} is smaller than the rank {current} of adapter {name!r} on {module_name}"
                )
            _pad(layer, name, rank)
            scaling = layer.scaling[name]
            if not isinstance(scaling, torch.Tensor):
                layer.scaling[name] = torch.tensor(scaling, device=layer.lora_A[name].weight.device)


def hotswap_adapter(
    model: Any, model_name_or_path: str | Path, adapter_name: str = "default", torch_device: Any = None, **kwargs: Any
) -> None:
    """Replace the weights of LoRA adapter ``adapter_name`` of ``model`` by those of the adapter
    saved at ``model_name_or_path``, in place (no module added or replaced).

    The new adapter must adapt the same modules, with a rank no larger than the parameters hold
    (pad them first with :func:`prepare_model_for_compiled_hotswap`); anything else is an error
    naming the modules or the ranks, raised before any weight changes. ``torch_device`` and
    ``kwargs`` are HF PEFT's (loading options); the tensors go to each parameter's device.
    """
    from peftplug.adapter_io import read_adapter
    from peftplug.interop.cross_framework import format_of, state_for_model

    if adapter_name not in getattr(model, "peft_config", {}):
        raise ValueError(f"hotswap_adapter: the model has no adapter named {adapter_name!r}")
    state = read_adapter(model_name_or_path)
    config = state.config
    if not isinstance(config, LoraConfig) or not isinstance(model.peft_config[adapter_name], LoraConfig):
        raise ValueError(
            f"hotswap_adapter swaps LoRA adapters; {str(model_name_or_path)!r} holds a {type(config).__name__} "
            f"and {adapter_name!r} is a {type(model.peft_config[adapter_name]).__name__}"
        )
    if config.use_dora or model.peft_config[adapter_name].use_dora:
        raise ValueError("hotswap_adapter: DoRA adapters cannot be hot-swapped (their magnitudes depend on the base)")
    state = state_for_model(state, model.base_model.model, format_of(model_name_or_path, None))
    layers = {name: layer for name, layer in _lora_layers(model).items() if adapter_name in layer.lora_A}
    incoming = _tensors_by_module(state.tensors)
    missing, unexpected = sorted(set(layers) - set(incoming)), sorted(set(incoming) - set(layers))
    if missing or unexpected:
        raise ValueError(
            f"hotswap_adapter: {str(model_name_or_path)!r} does not adapt the modules {adapter_name!r} adapts "
            f"(no tensors for {missing or 'none'}; tensors for modules it does not adapt: {unexpected or 'none'})"
        )
    for module_name, layer in layers.items():
        _check_fits(module_name, layer, adapter_name, incoming[module_name])
    for module_name, layer in layers.items():
        tensors = incoming[module_name]
        rank, alpha = config.rank_and_alpha(module_name)
        _copy_padded(layer, adapter_name, tensors["lora_A.weight"], tensors["lora_B.weight"])
        layer.r[adapter_name], layer.lora_alpha[adapter_name] = rank, alpha
        scaling = config.scaling(rank, alpha)
        if isinstance(layer.scaling[adapter_name], torch.Tensor):
            layer.scaling[adapter_name].fill_(scaling)
        else:
            layer.scaling[adapter_name] = scaling
    model.peft_config[adapter_name] = config


def _lora_layers(model: Any) -> dict[str, LoraLinear]:
    base = model.base_model.model if hasattr(model, "base_model") else model
    return {name: module for name, module in base.named_modules() if isinstance(module, LoraLinear)}


def _tensors_by_module(tensors: dict) -> dict[str, dict]:
    """``{module path: {"lora_A.weight": array, "lora_B.weight": array}}`` of HF PEFT keys."""
    modules: dict[str, dict] = {}
    for key, value in tensors.items():
        for suffix in ("lora_A.weight", "lora_B.weight"):
            if key.endswith("." + suffix):
                path = key[: -len(suffix) - 1].removeprefix(KEY_PREFIX)
                modules.setdefault(path, {})[suffix] = value
    return modules


def _pad(layer: LoraLinear, name: str, rank: int) -> None:
    """Grow adapter ``name``'s A to ``rank`` rows and B to ``rank`` columns, the new ones zero."""
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    if a.shape[0] == rank:
        return
    with torch.no_grad():
        padded_a = a.new_zeros(rank, a.shape[1])
        padded_a[: a.shape[0]] = a
        padded_b = b.new_zeros(b.shape[0], rank)
        padded_b[:, : b.shape[1]] = b
    layer.lora_A[name].weight = torch.nn.Parameter(padded_a, requires_grad=a.requires_grad)
    layer.lora_B[name].weight = torch.nn.Parameter(padded_b, requires_grad=b.requires_grad)
    layer.lora_A[name].out_features = layer.lora_B[name].in_features = rank


def _check_fits(module_name: str, layer: LoraLinear, name: str, tensors: dict) -> None:
    """The new ``lora_A`` ``[r, in]`` and ``lora_B`` ``[out, r]`` fit the held parameters: same
    ``in`` and ``out``, a rank no larger than the held (padded) one; else an error naming them."""
    held_a, held_b = layer.lora_A[name].weight, layer.lora_B[name].weight
    a, b = tensors.get("lora_A.weight"), tensors.get("lora_B.weight")
    if a is None or b is None:
        raise ValueError(
            f"hotswap_adapter: {module_name} has {sorted(tensors)} in the new adapter, not lora_A and lora_B"
        )
    if a.shape[1] != held_a.shape[1] or b.shape[0] != held_b.shape[0] or a.shape[0] != b.shape[1]:
        raise ValueError(
            f"hotswap_adapter: {module_name}: the new lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit "
            f"the held {tuple(held_a.shape)} / {tuple(held_b.shape)}"
        )
    if a.shape[0] > held_a.shape[0]:
        raise ValueError(
            f"hotswap_adapter: {module_name} holds rank {held_a.shape[0]} for {name!r} and the new adapter has rank "
            f"{a.shape[0]}; call prepare_model_for_compiled_hotswap(model, target_rank={a.shape[0]}) before "
            "compiling, and the rank of any adapter up to it swaps in"
        )


def _copy_padded(layer: LoraLinear, name: str, a: Any, b: Any) -> None:
    """Copy ``a`` ``[r, in]`` and ``b`` ``[out, r]`` into the leading rows / columns of the
    adapter's parameters (checked by :func:`_check_fits`), zeroing the padding."""
    held_a, held_b = layer.lora_A[name].weight, layer.lora_B[name].weight
    rank = a.shape[0]
    with torch.no_grad():
        held_a.zero_()
        held_a[:rank].copy_(torch.as_tensor(a))
        held_b.zero_()
        held_b[:, :rank].copy_(torch.as_tensor(b))
