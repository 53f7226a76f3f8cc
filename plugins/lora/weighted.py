"""``add_weighted_adapter``: a new LoRA adapter combining existing ones, as HF PEFT's
``LoraModel.add_weighted_adapter`` computes it, on either framework.

The arithmetic is done on the adapters' tensors as every LoRA layer exports them (HF PEFT's
layout, numpy), so one implementation serves torch and Paddle; only the SVD is the framework's
own (``svd`` of the layer module), since singular vectors' signs differ between LAPACK builds and
HF PEFT's numbers are torch's. For adapters ``i`` with weights ``w_i`` and scalings ``s_i``:

- ``linear`` (equal ranks): ``A = sum sign(w_i s_i) sqrt|w_i s_i| A_i``, ``B = sum sqrt|w_i s_i| B_i``;
- ``cat``: ``A = [w_i s_i A_i]`` stacked along the rank, ``B = [B_i]`` side by side (exact);
- ``svd``: the rank-``svd_rank`` truncated SVD of ``sum w_i s_i B_i A_i`` (``B = U S``, ``A = Vh``).

The new adapter has ``r = lora_alpha = `` the new rank (scaling 1 without rsLoRA), the union of
the adapters' target modules, and is added inactive and frozen.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import numpy as np

from peftplug.errors import ConfigError, PeftplugError

COMBINATIONS = ("linear", "cat", "svd")
# The tensors of a LoRA adapter, by layer kind: (A suffix, B suffix).
PAIRS = (("lora_A.weight", "lora_B.weight"), ("lora_embedding_A", "lora_embedding_B"))


def add_weighted_adapter(
    peft_model: Any,
    adapters: list[str],
    weights: list[float],
    adapter_name: str,
    combination_type: str = "svd",
    svd_rank: int | None = None,
    svd_clamp: float | None = None,
    svd_full_matrices: bool = True,
    svd_driver: str | None = None,
    density: float | None = None,
    majority_sign_method: str = "total",
) -> None:
    """Add adapter ``adapter_name`` combining ``adapters`` with ``weights`` (HF PEFT's keywords;
    ``combination_type`` one of ``linear``, ``cat``, ``svd``). An existing ``adapter_name`` is
    left alone, as in HF PEFT. Every argument is checked before the model changes."""
    if adapter_name in peft_model.peft_config:
        return
    configs = _checked(peft_model, adapters, weights, combination_type, density)
    if len(adapters) == 1:
        combination_type = "linear"
    ranks = [max([c.r, *(c.rank_pattern or {}).values()]) for c in configs]
    if combination_type == "linear" and len(set(ranks)) != 1:
        raise ConfigError("add_weighted_adapter", "combination_type", "linear", f"adapters of one rank (got {ranks})")
    new_rank = {"linear": ranks[0], "cat": sum(ranks)}.get(combination_type) or svd_rank or max(ranks)
    if combination_type == "svd":
        _check_svd_rank(peft_model, adapters, new_rank)
    config = dataclasses.replace(
        configs[0],
        r=new_rank,
        lora_alpha=new_rank,
        target_modules=_union_of_targets(configs),
        rank_pattern={},
        alpha_pattern={},
    )
    svd = importlib.import_module(f"peftplug.plugins.lora.{peft_model._peft_ops.name}_layers").svd
    peft_model.add_adapter(adapter_name, config)
    for name, layer in peft_model.base_model.adapter_layers():
        if adapter_name not in layer.adapter_names or not hasattr(layer, "scaling"):
            continue
        new = layer.export_adapter(adapter_name)
        a_key, b_key = next(pair for pair in PAIRS if pair[0] in new)
        held = [(n, w) for n, w in zip(adapters, weights) if n in layer.adapter_names]
        tensors = {n: layer.export_adapter(n) for n, _ in held}
        parts = [(w * layer.scaling[n], tensors[n][a_key], tensors[n][b_key]) for n, w in held]
        if combination_type == "cat":
            a, b = _cat(parts, new[a_key], new[b_key])
        elif combination_type == "svd":
            a, b = _svd(parts, new[a_key], new[b_key], svd, svd_clamp, svd_full_matrices, svd_driver)
        else:
            a, b = _linear(parts)
        layer.import_adapter(adapter_name, {a_key: a, b_key: b}, f"base_model.model.{name}.")


def _checked(peft_model: Any, adapters: list[str], weights: list[float], combination: str, density: Any) -> list[Any]:
    """The adapters' configs, once every argument is known to be usable."""
    if combination not in COMBINATIONS:
        raise ConfigError(
            "add_weighted_adapter",
            "combination_type",
            combination,
            f"one of {', '.join(COMBINATIONS)} (HF PEFT's ties, dare and magnitude_prune variants are not supported)",
        )
    if density is not None:
        raise ConfigError("add_weighted_adapter", "density", density, "None: linear, cat and svd take no density")
    if not adapters or len(adapters) != len(weights):
        raise ConfigError(
            "add_weighted_adapter", "weights", weights, f"one weight per adapter ({len(adapters)} adapters)"
        )
    for name in adapters:
        if name not in peft_model.peft_config:
            raise PeftplugError(
                f"add_weighted_adapter: no adapter named {name!r}; this model has: {', '.join(peft_model.peft_config)}"
            )
    configs = [peft_model.peft_config[name] for name in adapters]
    for name, config in zip(adapters, configs):
        if config.use_dora:
            raise ConfigError(
                type(config).__name__,
                "use_dora",
                True,
                f"False: adapter {name!r} is DoRA, whose magnitude cannot be combined",
            )
    if len({isinstance(c.target_modules, str) for c in configs}) > 1:
        raise ConfigError(
            "add_weighted_adapter", "adapters", adapters, "adapters whose target_modules are all lists or all regexes"
        )
    for name, layer in peft_model.base_model.adapter_layers():
        if getattr(layer, "auxiliary", False) and sum(a in layer.adapter_names for a in adapters) > 1:
            raise PeftplugError(
                f"add_weighted_adapter: module {name!r} is in modules_to_save of several of {adapters}, "
                "whose copies cannot be combined"
            )
    return configs


def _check_svd_rank(peft_model: Any, adapters: list[str], rank: int) -> None:
    """Refuse a rank above what a module's ``[out, in]`` update can hold (HF PEFT would build an
    adapter whose B and A do not multiply)."""
    for name, layer in peft_model.base_model.adapter_layers():
        held = [n for n in adapters if n in layer.adapter_names and hasattr(layer, "scaling")]
        if held:
            tensors = layer.export_adapter(held[0])
            a_key, b_key = next(pair for pair in PAIRS if pair[0] in tensors)
            a, b = tensors[a_key], tensors[b_key]
            shape = (b.shape[0], a.reshape(a.shape[0], -1).shape[1])
            if rank > min(shape):
                raise ConfigError(
                    "add_weighted_adapter",
                    "svd_rank",
                    rank,
                    f"at most {min(shape)}: module {name!r} has a {shape[0]}x{shape[1]} update",
                )


def _union_of_targets(configs: list[Any]) -> Any:
    if isinstance(configs[0].target_modules, str):
        return "|".join(f"({c.target_modules})" for c in configs)
    return sorted({m for c in configs for m in c.target_modules})


def _linear(parts: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    a = sum(math.copysign(math.sqrt(abs(s)), s) * part_a for s, part_a, _ in parts)
    b = sum(math.sqrt(abs(s)) * part_b for s, _, part_b in parts)
    return a.astype(parts[0][1].dtype), b.astype(parts[0][2].dtype)


def _cat(parts, new_a: np.ndarray, new_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.zeros_like(new_a), np.zeros_like(new_b)
    stacked_a = np.concatenate([(s * part_a).astype(new_a.dtype) for s, part_a, _ in parts], axis=0)
    stacked_b = np.concatenate([part_b for _, _, part_b in parts], axis=1)
    a[: stacked_a.shape[0]] = stacked_a
    b[:, : stacked_b.shape[1]] = stacked_b
    return a, b


def _svd(parts, new_a, new_b, svd, clamp, full_matrices, driver) -> tuple[np.ndarray, np.ndarray]:
    """``B = U S``, ``A = Vh`` of the rank-r truncated SVD of ``sum s_i B_i A_i`` (as ``[out, in]``
    matrices: a convolution's kernel axes are flattened into ``in``)."""
    delta = sum(
        (s * (part_b.reshape(part_b.shape[0], -1) @ part_a.reshape(part_a.shape[0], -1))).astype(np.float32)
        for s, part_a, part_b in parts
    )
    u, singular, vh = svd(delta.astype(new_a.dtype), full_matrices, driver)
    rank = new_a.shape[0]
    u, vh = u[:, :rank] @ np.diag(singular[:rank]), vh[:rank, :]
    if clamp is not None:
        high = np.quantile(np.concatenate([u.ravel(), vh.ravel()]), clamp)
        u, vh = np.clip(u, -high, high), np.clip(vh, -high, high)
    return vh.reshape(new_a.shape).astype(new_a.dtype), u.reshape(new_b.shape).astype(new_b.dtype)
