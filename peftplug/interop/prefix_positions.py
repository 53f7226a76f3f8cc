"""Prefix tuning moved between the position conventions of two naming conventions: HF
transformers' and PaddleNLP's (:class:`~peftplug.registration.PrefixCache` ``positions``).

HF's Llama/Qwen2 give the input tokens after a prefix of ``T`` virtual tokens the position ids
``T, T+1, ...``; PaddleNLP's restart them at ``0``. The prefix keys are cached already "rotated"
(no RoPE is applied to a cache), so a query at HF position ``p + T`` meets them as
``R(p + T) q . k = R(p) q . R(-T) k``: the same adapter behaves the same on PaddleNLP when each
prefix key head is rotated by the RoPE angle of ``-T`` (HF -> Paddle), and by ``+T`` back
(Paddle -> HF). Values are untouched; Bloom (ALiBi on both sides) needs nothing.

The convention of an adapter is its file format's: HF PEFT files (``adapter_config.json``) are
in HF's positions, PaddleNLP files (``prefix_config.json``) in PaddleNLP's, whichever framework
wrote them (peftplug rotates when a Paddle model saves HF PEFT files, and back when it loads
them). With a projection, the rotation (linear) is folded into the last Linear's weight rows and
bias of the key columns, so the table stays the encoder's output.

RoPE needs ``rope_theta`` and ``head_dim``: ``head_dim = token_dim / num_attention_heads`` from
the adapter's config; ``rope_theta`` from the base model's config (:class:`RopeSpec`), or the
default both libraries' ``LlamaConfig`` share (10000, with a warning) for Llama; any other family
without a base config, and any ``rope_scaling``, is refused.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from peftplug.errors import PeftplugError
from peftplug.registration import Architecture
from peftplug.state import AdapterState

TABLE = "prompt_embeddings"
LAST_WEIGHT = "prompt_encoder.transform.2.weight"
LAST_BIAS = "prompt_encoder.transform.2.bias"
# Families whose ``rope_theta`` default is the one real checkpoints use.
DEFAULT_THETA = {"llama": 10000.0}


class PrefixConversionError(PeftplugError, ValueError):
    """A prefix adapter's positions cannot be converted (unknown RoPE, unknown family)."""


@dataclasses.dataclass(frozen=True)
class RopeSpec:
    """The rotary embedding of the base model: ``theta`` (``rope_theta``) and ``head_dim``."""

    theta: float
    head_dim: int


def position_shift(architecture: Architecture, source: str, target: str) -> int:
    """How far the input's position ids move, in prefix lengths ``T``, from convention
    ``source``'s prefix positions to ``target``'s: ``-1`` (``"offset"`` -> ``"restart"``: HF ->
    PaddleNLP), ``+1`` (back), ``0`` when they agree (both ALiBi, say). Refused when a
    convention has no prefix-tuning layout for the family, or positions cannot be moved."""
    layout = architecture.prefix_cache
    caches = {name: layout.of(name) if layout else None for name in (source, target)}
    for name, cache in caches.items():
        if cache is None or cache.order is None:
            raise PrefixConversionError(
                f"architecture {architecture.name!r} has no prefix-tuning layout in convention {name!r}; prefix "
                "adapters of it cannot be converted"
            )
    start = {"offset": 1, "restart": 0}
    before, after = caches[source].positions, caches[target].positions
    if before == after:
        return 0
    if before not in start or after not in start:
        raise PrefixConversionError(
            f"architecture {architecture.name!r}: prefix positions {before!r} ({source}) and {after!r} ({target}) "
            "cannot be converted into each other"
        )
    return start[after] - start[before]


def rope_spec(architecture: Architecture, config: Any, base_config: Any = None) -> RopeSpec:
    """The RoPE of the base model: from ``base_config`` (a dict, a transformers/PaddleNLP config)
    when given, else the family's default ``rope_theta`` (with a warning)."""
    heads, width = config.num_attention_heads, config.token_dim
    if not heads or not width or width % heads:
        raise PrefixConversionError(
            f"PrefixTuningConfig token_dim={width} / num_attention_heads={heads} gives no head_dim for RoPE"
        )
    head_dim = width // heads
    values = _values(base_config)
    if values:
        if values.get("rope_scaling"):
            raise PrefixConversionError(
                f"base config rope_scaling={values['rope_scaling']!r}: converting prefix positions with scaled RoPE "
                "is not implemented"
            )
        if values.get("head_dim") and int(values["head_dim"]) != head_dim:
            raise PrefixConversionError(
                f"base config head_dim={values['head_dim']} but the adapter's token_dim/num_attention_heads is {head_dim}"
            )
        if values.get("rope_theta") is not None:
            return RopeSpec(float(values["rope_theta"]), head_dim)
    if architecture.name not in DEFAULT_THETA:
        raise PrefixConversionError(
            f"converting a {architecture.name} prefix adapter needs the base model's rope_theta: pass base_config= "
            "(the model's config or its config.json path) or put config.json beside the adapter"
        )
    theta = DEFAULT_THETA[architecture.name]
    warnings.warn(
        f"no base config given: rotating the prefix keys with {architecture.name}'s default rope_theta={theta} "
        "(pass base_config= if the model uses another)",
        UserWarning,
        stacklevel=3,
    )
    return RopeSpec(theta, head_dim)


def rotate_prefix(state: AdapterState, rope: RopeSpec, sign: int) -> AdapterState:
    """``state`` with every prefix key head rotated by the RoPE angle of ``sign * T`` (the
    :func:`position_shift` between two conventions: ``-1`` HF -> PaddleNLP): the table and, with a projection, the last
    Linear's key rows and bias. Computed in float64, cast back to each tensor's dtype."""
    config = state.config
    tokens, layers, width = config.num_virtual_tokens, config.num_layers, config.token_dim
    rotation = _rotation(rope, sign * tokens)
    tensors, extra = dict(state.tensors), dict(state.extra_tensors)
    if TABLE not in tensors:
        raise PrefixConversionError(
            f"the prefix adapter has no {TABLE!r} tensor (tensors: {', '.join(sorted(tensors))})"
        )
    expected = (tokens, 2 * layers * width)
    if tuple(tensors[TABLE].shape) != expected:
        raise PrefixConversionError(
            f"tensor {TABLE!r} has shape {tuple(tensors[TABLE].shape)}, the config needs {expected}"
        )
    tensors[TABLE] = _rotate_keys(tensors[TABLE], rotation, layers, width, axis=1)
    if LAST_WEIGHT in extra:
        weight = extra[LAST_WEIGHT]
        if weight.shape[0] != 2 * layers * width:
            raise PrefixConversionError(
                f"tensor {LAST_WEIGHT!r} has shape {tuple(weight.shape)}, the config needs {2 * layers * width} rows"
            )
        extra[LAST_WEIGHT] = _rotate_keys(weight, rotation, layers, width, axis=0)
    if LAST_BIAS in extra:
        extra[LAST_BIAS] = _rotate_keys(extra[LAST_BIAS], rotation, layers, width, axis=0)
    return AdapterState(state.config, tensors, extra)


def _rotation(rope: RopeSpec, position: int) -> np.ndarray:
    """The ``[head_dim, head_dim]`` matrix of HF's ``x * cos + rotate_half(x) * sin`` at ``position``."""
    dim = rope.head_dim
    if dim % 2:
        raise PrefixConversionError(f"RoPE needs an even head_dim, got {dim}")
    inv_freq = 1.0 / (rope.theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    angles = np.concatenate([position * inv_freq, position * inv_freq])
    cos, sin = np.cos(angles), np.sin(angles)
    half = dim // 2
    rotate_half = np.zeros((dim, dim))
    rotate_half[np.arange(half), np.arange(half) + half] = -1.0
    rotate_half[np.arange(half) + half, np.arange(half)] = 1.0
    return np.diag(cos) + np.diag(sin) @ rotate_half


def _rotate_keys(array: np.ndarray, rotation: np.ndarray, layers: int, width: int, axis: int) -> np.ndarray:
    """Rotate the key blocks (even blocks of the interleaved ``2 L`` blocks along ``axis``)."""
    moved = np.moveaxis(array.astype(np.float64), axis, -1)
    dim = rotation.shape[0]
    blocks = moved.reshape(*moved.shape[:-1], layers, 2, width // dim, dim).copy()
    blocks[..., 0, :, :] = blocks[..., 0, :, :] @ rotation.T
    result = np.moveaxis(blocks.reshape(moved.shape), -1, axis)
    return np.ascontiguousarray(result.astype(array.dtype))


def _values(base_config: Any) -> dict[str, Any]:
    if base_config is None:
        return {}
    if isinstance(base_config, dict):
        return dict(base_config)
    if callable(getattr(base_config, "to_dict", None)):
        return dict(base_config.to_dict())
    return dict(vars(base_config))
