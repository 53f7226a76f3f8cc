"""A layer method's tensors of a module one library fuses and the other keeps in parts, exactly.

What happens to each tensor is read from its declared axes (:mod:`peftplug.tensor_roles`), so
any method that declares them fuses and splits:

Fusing (HF ``q_proj``, ``k_proj``, ``v_proj`` -> PaddleNLP Llama's ``qkv_proj``; PaddleNLP GPT's
``q_proj``.. -> GPT-2's ``c_attn``):

- a tensor along the output (``"out"``: IA3's output vector, a bias, a per-channel scale) is the
  parts' tensors concatenated in the fused output order (the family map's layout); a missing part
  takes the role's ``fill`` (IA3: 1), or is refused when the role has none (a trained bias);
- a tensor with no output axis (IA3's feed-forward input vector) must be the same in every part;
- low-rank pairs (``("rank", "in")`` down, ``("out", "rank")`` up, LoRA's ``lora_A``, ``lora_B``):
  the downs stacked along the rank, the up block-diagonal with its rows in the fused order, so
  the rank grows to ``parts * r`` and a part without the pair contributes zero blocks. When
  every part has the same down (a split made by this module) they share it and the rank stays.
  The method's other modules are padded with zero rank rows/columns (``up @ down`` unchanged) and
  its ``rescale_rank`` keeps the config in step.

Splitting: each part gets the tensors without an output axis whole, and its rows of the others
(always exact). When every split up is block-diagonal in the parts and every other module's
padding is zero (an adapter fused by this module), the rank is given back: part ``i`` takes
block ``i``; this is what makes a round trip bit-identical.
"""

from __future__ import annotations

import numpy as np

from peftplug.interop.module_tree import ConversionError, Routed
from peftplug.interop.name_maps import NameMatch, fused_output_order, fused_part_sizes
from peftplug.tensor_roles import TensorRole

Parts = dict[int, dict[str, np.ndarray]]


def join_parts(
    routed: Routed, prefix: str, heads: tuple[int | None, int | None], roles: dict[str, TensorRole]
) -> tuple[dict[str, np.ndarray], int]:
    """The fused modules' tensors (full keys), and the factor the rank grew by (1: none)."""
    result: dict[str, np.ndarray] = {}
    factor = 1
    for target, (match, parts) in routed.fuses.items():
        count = match.part[1]
        where = f"{prefix}{target}"
        params = sorted({param for part in parts.values() for param in part})
        _check_declared(params, roles, where, "fuses", count)
        sizes = _sizes(match, parts, count, heads, roles, where)
        order = fused_output_order(match.module.layout, sizes, heads[1])
        down, up = _pair(params, roles)
        if up is not None:
            a, b, grew = _fuse_pair(parts, count, sizes, down, up, where)
            result[f"{where}.{down}"], result[f"{where}.{up}"] = a, np.ascontiguousarray(b[order])
            factor = max(factor, grew)
        for param in params:
            if param not in (down, up):
                result[f"{where}.{param}"] = _fuse_plain(parts, param, roles[param], count, sizes, order, where)
    return result, factor


def split_parts(
    routed: Routed, prefix: str, heads: tuple[int | None, int | None], roles: dict[str, TensorRole]
) -> dict[str, tuple[int, dict[str, np.ndarray]]]:
    """The parts' tensors of each module the target splits: ``{source module: (count, {key: array})}``
    with full target keys; a low-rank down whole in every part (see :func:`compress_rank`)."""
    result = {}
    for source, (match, params) in routed.splits.items():
        count = len(match.names)
        where = f"{prefix}{source}"
        _check_declared(sorted(params), roles, where, "splits", count)
        axes = {param: roles[param].layout(value.shape) for param, value in params.items()}
        rows = next((v.shape[axes[p].index("out")] for p, v in params.items() if "out" in axes[p]), None)
        if rows is None:
            raise ConversionError(
                f"module {where!r}: nothing tells the size of its fused output (no tensor along the output: "
                f"{', '.join(sorted(params))})"
            )
        sizes = fused_part_sizes(match.module.layout, rows, count, *heads)
        inverse = np.argsort(fused_output_order(match.module.layout, sizes, heads[1]))
        bounds = np.cumsum([0, *sizes])
        tensors = {}
        for index, name in enumerate(match.names):
            module = name[: -len(match.param) - 1] if match.param else name
            for param, value in params.items():
                if "out" not in axes[param]:
                    tensors[f"{prefix}{module}.{param}"] = value
                    continue
                axis = axes[param].index("out")
                rows_of_part = np.take(value, inverse, axis=axis)
                piece = np.take(rows_of_part, np.arange(bounds[index], bounds[index + 1]), axis=axis)
                tensors[f"{prefix}{module}.{param}"] = np.ascontiguousarray(piece)
        result[source] = (count, tensors)
    return result


def compress_rank(
    split: dict[str, tuple[int, dict[str, np.ndarray]]], others: dict[str, np.ndarray], roles: dict[str, TensorRole]
) -> tuple[dict[str, np.ndarray], int]:
    """All low-rank tensors (split parts and ``others``) at the smallest exact rank:
    ``rank / count`` when each split up is block-diagonal and the other modules' extra rank is
    zero, else the split as it is. Returns the tensors and the factor the rank shrank by."""
    down, up = _pair(list(roles), roles)
    merged = {**others, **{k: v for _, tensors in split.values() for k, v in tensors.items()}}
    if up is None:
        return merged, 1
    counts = {count for count, tensors in split.values() if any(k.endswith("." + up) for k in tensors)}
    if not counts:
        return merged, 1
    count = max(counts)  # the rank of a join is padded to the largest: blocks of rank / count
    shrunk: dict[str, np.ndarray] = dict(others)
    for _, tensors in split.values():
        pieces = {}
        for index, up_key in enumerate(k for k in tensors if k.endswith("." + up)):
            down_key = up_key[: -len(up)] + down
            piece = _block(tensors[down_key], tensors[up_key], count, index)
            if piece is None:
                return merged, 1
            pieces[down_key, up_key] = piece
        nonzero = any(np.any(b) for _, b in pieces.values())
        for (down_key, up_key), piece in pieces.items():
            if np.any(piece[1]) or not nonzero:  # a part left at zero beside trained ones had no pair
                shrunk[down_key], shrunk[up_key] = piece
        shrunk.update({k: v for k, v in tensors.items() if not k.endswith(("." + down, "." + up))})
    for up_key in [k for k in others if k.endswith("." + up)]:
        down_key = up_key[: -len(up)] + down
        piece = _block(others[down_key], others[up_key], count, 0)
        if piece is None:
            return merged, 1
        shrunk[down_key], shrunk[up_key] = piece
    return shrunk, count


def pad_rank(tensors: dict[str, np.ndarray], rank: int, roles: dict[str, TensorRole]) -> dict[str, np.ndarray]:
    """Every tensor with a rank axis padded with zeros along it up to ``rank``."""
    result = dict(tensors)
    for key, value in tensors.items():
        role = next((r for suffix, r in roles.items() if key.endswith("." + suffix)), None)
        if role is None or "rank" not in (layout := role.layout(value.shape)):
            continue
        axis = layout.index("rank")
        if value.shape[axis] < rank:
            padding = [(0, 0)] * value.ndim
            padding[axis] = (0, rank - value.shape[axis])
            result[key] = np.pad(value, padding)
    return result


def _pair(params: list[str], roles: dict[str, TensorRole]) -> tuple[str | None, str | None]:
    """The low-rank ``(down, up)`` suffixes among ``params``: ``("rank", "in")`` and ``("out", "rank")``."""
    down = next((p for p in params if ("rank", "in") in roles[p].layouts), None)
    up = next((p for p in params if ("out", "rank") in roles[p].layouts), None)
    return (down, up) if up is not None else (None, None)


def _check_declared(params: list[str], roles: dict[str, TensorRole], where: str, verb: str, count: int) -> None:
    unknown = [param for param in params if param not in roles]
    if unknown:
        raise ConversionError(
            f"tensor {where}.{unknown[0]}: the other library {verb} this module ({count} parts); only the tensors "
            f"a method declares ({', '.join(roles) or 'none'}) can follow"
        )
    for param in params:
        rank_layouts = [layout for layout in roles[param].layouts if "rank" in layout]
        if any(layout not in (("rank", "in"), ("out", "rank")) for layout in rank_layouts):
            raise ConversionError(
                f"tensor {where}.{param}: the other library {verb} this module; a rank tensor must be laid out "
                f"('rank', 'in') or ('out', 'rank') to follow, not {rank_layouts}"
            )


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
    match: NameMatch, parts: Parts, count: int, heads: tuple, roles: dict[str, TensorRole], where: str
) -> list[int]:
    """Output sizes of the ``count`` parts, from those present (and the model's head counts)."""
    known = {}
    for index, params in parts.items():
        for param, value in params.items():
            size = roles[param].size_of(value.shape, "out")
            if size is not None:
                known[index] = size
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


def _fuse_pair(
    parts: Parts, count: int, sizes: list[int], down: str, up: str, where: str
) -> tuple[np.ndarray, np.ndarray, int]:
    present = {i: p for i, p in parts.items() if up in p}
    for index, params in present.items():
        if down not in params:
            raise ConversionError(f"module {where!r}: part {index} has {up} but no {down}")
        if params[down].shape[0] != params[up].shape[1]:
            raise ConversionError(
                f"tensor {where} part {index}: {down} {list(params[down].shape)} and {up} "
                f"{list(params[up].shape)} ranks differ"
            )
    first = next(iter(present.values()))
    rank, width, dtype = first[down].shape[0], first[down].shape[1], first[down].dtype
    if len(present) == count and all(np.array_equal(p[down], first[down]) for p in present.values()):
        return first[down], np.concatenate([present[i][up] for i in range(count)]), 1
    a = np.zeros((count * rank, width), dtype)
    b = np.zeros((sum(sizes), count * rank), dtype)
    offsets = np.cumsum([0, *sizes])
    for index, params in present.items():
        if params[down].shape != (rank, width):
            raise ConversionError(
                f"tensor {where} part {index}: {down} is {list(params[down].shape)}, part "
                f"{next(iter(present))} has {[rank, width]}"
            )
        a[index * rank : (index + 1) * rank] = params[down]
        b[offsets[index] : offsets[index + 1], index * rank : (index + 1) * rank] = params[up]
    return a, b, count


def _fuse_plain(
    parts: Parts, param: str, role: TensorRole, count: int, sizes: list[int], order: list[int], where: str
) -> np.ndarray:
    """A tensor without a rank axis, fused: joined along the output, or shared when it has none."""
    values = {i: p[param] for i, p in parts.items() if param in p}
    first = next(iter(values.values()))
    layout = role.layout(first.shape)
    if "out" not in layout:
        if len(values) != count or any(not np.array_equal(v, first) for v in values.values()):
            raise ConversionError(
                f"tensor {where}.{param}: the parts hold different values for the shared input; not representable fused"
            )
        return first
    if len(values) != count and role.fill is None:
        raise ConversionError(
            f"tensor {where}.{param}: the other library fuses this module, and only parts {sorted(values)} of "
            f"{count} have it (it has no fill value for the others)"
        )
    axis = layout.index("out")

    def filled(index: int) -> np.ndarray:
        shape = list(first.shape)
        shape[axis] = sizes[index]
        return np.full(shape, role.fill, first.dtype)

    joined = np.concatenate([values[i] if i in values else filled(i) for i in range(count)], axis=axis)
    return np.ascontiguousarray(np.take(joined, order, axis=axis))
