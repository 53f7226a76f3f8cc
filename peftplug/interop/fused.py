"""LoRA / IA3 tensors of a module one library fuses and the other keeps in parts, exactly.

Fusing (HF ``q_proj``, ``k_proj``, ``v_proj`` -> PaddleNLP Llama's ``qkv_proj``; PaddleNLP GPT's
``q_proj``.. -> GPT-2's ``c_attn``): ``lora_A`` of the parts stacked along the rank axis,
``lora_B`` block-diagonal, its rows put in the fused output order (the family map's layout), so
the rank grows to ``parts * r``; a part without LoRA contributes zero blocks. When every part has
the same ``lora_A`` (a split made by this module) the parts share it and the rank stays ``r``.
PaddleNLP has one ``r`` for every layer, so the other LoRA modules are padded with zero rank
rows/columns to the new rank (``B @ A`` unchanged) and ``lora_alpha`` is scaled so that
``scaling`` stays the same. IA3 vectors of the output are joined (a part without IA3 scales by
1); an input (feed-forward) vector must be the same for every part.

Splitting: each part gets ``lora_A`` whole and its rows of ``lora_B`` (always exact). When every
fused ``lora_B`` is block-diagonal in the parts and every other module's padding is zero (an
adapter fused by this module), the rank is given back: part ``i`` takes block ``i``; this is
what makes a round trip bit-identical.
"""

from __future__ import annotations

import numpy as np

from peftplug.interop.module_tree import ConversionError, Routed
from peftplug.interop.name_maps import NameMatch, fused_output_order, fused_part_sizes

A, B, BIAS, IA3 = "lora_A.weight", "lora_B.weight", "base_layer.bias", "ia3_l"


def join_parts(routed: Routed, prefix: str, heads: tuple[int | None, int | None]) -> tuple[dict[str, np.ndarray], int]:
    """The fused modules' tensors (full keys), and the factor the LoRA rank grew by (1: none)."""
    result: dict[str, np.ndarray] = {}
    factor = 1
    for target, (match, parts) in routed.fuses.items():
        count = match.part[1]
        where = f"{prefix}{target}"
        params = {param for part in parts.values() for param in part}
        sizes = _sizes(match, parts, count, heads, where)
        order = fused_output_order(match.module.layout, sizes, heads[1])
        for param in sorted(params):
            if param == A:
                continue
            if param == B:
                a, b, grew = _fuse_lora(parts, count, sizes, where)
                result[f"{where}.{A}"], result[f"{where}.{B}"] = a, np.ascontiguousarray(b[order])
                factor = max(factor, grew)
            elif param == IA3:
                result[f"{where}.{IA3}"] = _fuse_ia3(parts, count, sizes, order, where)
            elif param == BIAS and len(parts) == count:
                result[f"{where}.{BIAS}"] = np.concatenate([parts[i][BIAS] for i in range(count)])[order]
            else:
                raise ConversionError(
                    f"tensor {where}.{param}: the other library fuses this module; only LoRA, IA3 and a complete bias "
                    f"can be joined (parts present: {sorted(parts)} of {count})"
                )
    return result, factor


def split_parts(
    routed: Routed, prefix: str, heads: tuple[int | None, int | None]
) -> dict[str, tuple[int, dict[str, np.ndarray]]]:
    """The parts' tensors of each module the target splits: ``{source module: (count, {key: array})}``
    with full target keys; ``lora_A`` whole in every part (see :func:`compress_rank`)."""
    result = {}
    for source, (match, params) in routed.splits.items():
        count = len(match.names)
        where = f"{prefix}{source}"
        rows = next((v.shape[0] for p, v in params.items() if p in (B, BIAS) or (p == IA3 and v.shape[1] == 1)), None)
        if rows is None:
            raise ConversionError(
                f"module {where!r}: nothing tells the size of its fused output (no lora_B, bias or ia3_l)"
            )
        sizes = fused_part_sizes(match.module.layout, rows, count, *heads)
        inverse = np.argsort(fused_output_order(match.module.layout, sizes, heads[1]))
        bounds = np.cumsum([0, *sizes])
        tensors = {}
        for index, name in enumerate(match.names):
            module = name[: -len(match.param) - 1] if match.param else name
            for param, value in params.items():
                key = f"{prefix}{module}.{param}"
                if param == A or (param == IA3 and value.shape[0] == 1):
                    tensors[key] = value
                elif param in (B, BIAS, IA3):
                    tensors[key] = np.ascontiguousarray(value[inverse][bounds[index] : bounds[index + 1]])
                else:
                    raise ConversionError(
                        f"tensor {where}.{param} ({list(value.shape)}): the other library splits this module in "
                        f"{count}; only LoRA, IA3 and biases can be split"
                    )
        result[source] = (count, tensors)
    return result


def compress_rank(
    split: dict[str, tuple[int, dict[str, np.ndarray]]], others: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], int]:
    """All LoRA tensors (split parts and ``others``) at the smallest exact rank: ``rank / count``
    when each split ``lora_B`` is block-diagonal and the other modules' extra rank is zero, else
    the split as it is. Returns the tensors and the factor the rank shrank by."""
    counts = {count for count, tensors in split.values() if any(k.endswith(B) for k in tensors)}
    merged = {**others, **{k: v for _, tensors in split.values() for k, v in tensors.items()}}
    if not counts:
        return merged, 1
    count = max(counts)  # the rank of a join is padded to the largest: blocks of rank / count
    shrunk: dict[str, np.ndarray] = dict(others)
    for _, tensors in split.values():
        pieces = {}
        for index, b_key in enumerate(k for k in tensors if k.endswith(B)):
            a_key = b_key[: -len(B)] + A
            piece = _block(tensors[a_key], tensors[b_key], count, index)
            if piece is None:
                return merged, 1
            pieces[a_key, b_key] = piece
        nonzero = any(np.any(b) for _, b in pieces.values())
        for (a_key, b_key), piece in pieces.items():
            if np.any(piece[1]) or not nonzero:  # a part left at zero beside trained ones had no LoRA
                shrunk[a_key], shrunk[b_key] = piece
        shrunk.update({k: v for k, v in tensors.items() if not k.endswith((A, B))})
    for b_key in [k for k in others if k.endswith(B)]:
        a_key = b_key[: -len(B)] + A
        piece = _block(others[a_key], others[b_key], count, 0)
        if piece is None:
            return merged, 1
        shrunk[a_key], shrunk[b_key] = piece
    return shrunk, count


def pad_rank(tensors: dict[str, np.ndarray], rank: int) -> dict[str, np.ndarray]:
    """Every LoRA pair padded with zero rank rows (A) / columns (B) up to ``rank``."""
    result = dict(tensors)
    for key, value in tensors.items():
        if key.endswith(A) and value.shape[0] < rank:
            result[key] = np.concatenate([value, np.zeros((rank - value.shape[0], value.shape[1]), value.dtype)])
        elif key.endswith(B) and value.shape[1] < rank:
            result[key] = np.concatenate(
                [value, np.zeros((value.shape[0], rank - value.shape[1]), value.dtype)], axis=1
            )
    return result


def _block(a: np.ndarray, b: np.ndarray, count: int, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    rank = a.shape[0]
    if rank % count:
        return None
    width = rank // count
    keep = slice(index * width, (index + 1) * width)
    rest_b = np.delete(b, np.s_[keep], axis=1)
    if rest_b.size and np.any(rest_b):
        return None
    return np.ascontiguousarray(a[keep]), np.ascontiguousarray(b[:, keep])


def _sizes(
    match: NameMatch, parts: dict[int, dict[str, np.ndarray]], count: int, heads: tuple, where: str
) -> list[int]:
    """Output sizes of the ``count`` parts, from those present (and the model's head counts)."""
    known = {}
    for index, params in parts.items():
        for param, value in params.items():
            if param in (B, BIAS) or (param == IA3 and value.shape[1] == 1):
                known[index] = value.shape[0]
    if len(known) == count:
        return [known[i] for i in range(count)]
    if match.module.layout == "concat" and known:
        size = next(iter(known.values()))
        return [size] * count
    heads_q, heads_kv = heads
    if match.module.layout == "kv_groups" and known and heads_q and heads_kv:
        index, size = next(iter(known.items()))
        head_dim = size // (heads_q if index == 0 else heads_kv)
        return [heads_q * head_dim, heads_kv * head_dim, heads_kv * head_dim]
    raise ConversionError(
        f"module {where!r}: cannot tell the sizes of its {count} fused parts (parts present: {sorted(parts)}); "
        "pass the base model's config (num_attention_heads, num_key_value_heads)"
    )


def _fuse_lora(
    parts: dict[int, dict[str, np.ndarray]], count: int, sizes: list[int], where: str
) -> tuple[np.ndarray, np.ndarray, int]:
    present = {i: p for i, p in parts.items() if B in p}
    for index, params in present.items():
        if A not in params:
            raise ConversionError(f"module {where!r}: part {index} has lora_B but no lora_A")
        if params[A].shape[0] != params[B].shape[1]:
            raise ConversionError(
                f"tensor {where} part {index}: lora_A {list(params[A].shape)} and lora_B {list(params[B].shape)} ranks differ"
            )
    first = next(iter(present.values()))
    rank, width, dtype = first[A].shape[0], first[A].shape[1], first[A].dtype
    if len(present) == count and all(np.array_equal(p[A], first[A]) for p in present.values()):
        return first[A], np.concatenate([present[i][B] for i in range(count)]), 1
    a = np.zeros((count * rank, width), dtype)
    b = np.zeros((sum(sizes), count * rank), dtype)
    offsets = np.cumsum([0, *sizes])
    for index, params in present.items():
        if params[A].shape != (rank, width):
            raise ConversionError(
                f"tensor {where} part {index}: lora_A is {list(params[A].shape)}, part {next(iter(present))} has {[rank, width]}"
            )
        a[index * rank : (index + 1) * rank] = params[A]
        b[offsets[index] : offsets[index + 1], index * rank : (index + 1) * rank] = params[B]
    return a, b, count


def _fuse_ia3(
    parts: dict[int, dict[str, np.ndarray]], count: int, sizes: list[int], order: list[int], where: str
) -> np.ndarray:
    vectors = {i: p[IA3] for i, p in parts.items() if IA3 in p}
    first = next(iter(vectors.values()))
    if first.shape[0] == 1:  # input scaling: one vector for the shared input
        if len(vectors) != count or any(not np.array_equal(v, first) for v in vectors.values()):
            raise ConversionError(
                f"tensor {where}.{IA3}: the parts scale the shared input differently; not representable fused"
            )
        return first
    joined = [vectors.get(i, np.ones((sizes[i], 1), first.dtype)) for i in range(count)]
    return np.ascontiguousarray(np.concatenate(joined)[order])
