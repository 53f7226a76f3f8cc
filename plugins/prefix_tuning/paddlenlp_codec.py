"""Prefix tuning in PaddleNLP's files: ``prefix_config.json``, ``prefix_model_state`` and
``pre_caches.npy``, as ``paddlenlp.peft.PrefixModelForCausalLM.save_pretrained`` writes them.

PaddleNLP's encoder is ``Sequential(Embedding(T, 2 L D), Dropout)`` (keys ``0.weight``) or, with
projection, ``Sequential(Embedding(T, D), Linear(D, P), Tanh, Linear(P, 2 L D), Dropout)`` (keys
``0.weight``, ``1.weight`` ``[D, P]``, ``1.bias``, ``3.weight`` ``[P, 2 L D]``, ``3.bias``), with
``D = head_dim * kv_heads``. Its output's ``2 L`` blocks of ``D`` columns are SECTIONS (keys of
layers 0..L-1, then their values: Paddle's ``split(2)``); HF PEFT's interleave (k0, v0, k1, v1,
...). The canonical state holds HF PEFT's ``prompt_embeddings`` (the output table, interleaved)
and, for a projection, the torch encoder's weights as extra tensors
(``prompt_encoder.embedding.weight``, ``prompt_encoder.transform.0.weight`` ``[P, D]``, ...,
``transform.2`` producing interleaved columns). Reading a projection computes the table in
float64 and casts it to the weights' dtype. Writing a projection without its encoder weights
(an HF PEFT file keeps only the table) gives PaddleNLP's no-projection form with that table.
``pre_caches.npy`` (``[L, 2, kv_heads, T, head_dim]``, which PaddleNLP writes for its inference
predictor and never reads back) is written from the table; on reading a projection, its table
is taken instead of the float64 computation when the two agree (to 1e-5), so a round trip is
bit-exact.

Config: ``num_prefix_tokens`` <-> ``num_virtual_tokens``, ``num_hidden_layers`` <->
``num_layers``, ``prefix_projection``, ``prefix_projection_hidden_size`` <->
``encoder_hidden_size``; HF's ``token_dim`` and ``num_attention_heads`` are the key/value width
and heads (for grouped-query attention ``head_dim * multi_query_group_num`` and
``multi_query_group_num``), so they are written as ``hidden_size`` and ``num_attention_heads``
with ``multi_query_group_num`` null: PaddleNLP derives the same ``head_dim`` and heads from
that. ``prefix_dropout`` (training only) is read with a warning and dropped.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from peftplug.errors import AdapterLoadError, ConfigError
from peftplug.plugins.prefix_tuning.config import PrefixTuningConfig
from peftplug.state import AdapterState

ENCODER = "prompt_encoder."
TABLE = "prompt_embeddings"
PRE_CACHES = "pre_caches.npy"
_PROJECTION_KEYS = ("0.weight", "1.weight", "1.bias", "3.weight", "3.bias")


def _fail(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError("PaddleNLP PrefixConfig (prefix_config.json)", field, value, allowed)


def sections_to_interleaved(columns: np.ndarray, layers: int) -> np.ndarray:
    """Reorder the last axis from PaddleNLP's ``k0..k(L-1), v0..v(L-1)`` blocks to HF PEFT's
    ``k0, v0, k1, v1, ...``."""
    lead = columns.shape[:-1]
    width = columns.shape[-1] // (2 * layers)
    blocks = columns.reshape(*lead, 2, layers, width)
    return np.ascontiguousarray(np.swapaxes(blocks, -3, -2).reshape(*lead, 2 * layers * width))


def interleaved_to_sections(columns: np.ndarray, layers: int) -> np.ndarray:
    """The inverse of :func:`sections_to_interleaved`."""
    lead = columns.shape[:-1]
    width = columns.shape[-1] // (2 * layers)
    blocks = columns.reshape(*lead, layers, 2, width)
    return np.ascontiguousarray(np.swapaxes(blocks, -3, -2).reshape(*lead, 2 * layers * width))


def config_from_paddlenlp(data: dict[str, Any]) -> PrefixTuningConfig:
    """peftplug's PrefixTuningConfig for a PaddleNLP ``prefix_config.json``."""
    for field in ("num_prefix_tokens", "num_attention_heads", "num_hidden_layers", "hidden_size"):
        if not isinstance(data.get(field), int) or data[field] <= 0:
            raise _fail(field, data.get(field), "a positive integer")
    heads = data["num_attention_heads"]
    if data["hidden_size"] % heads:
        raise _fail("hidden_size", data["hidden_size"], f"a multiple of num_attention_heads={heads}")
    kv_heads = data.get("multi_query_group_num") or heads
    if data.get("prefix_dropout"):
        warnings.warn(
            f"prefix_config.json: prefix_dropout={data['prefix_dropout']} is not implemented by peftplug; "
            "the adapter's outputs are exact, but training continues without that dropout",
            UserWarning,
            stacklevel=3,
        )
    return PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=data["num_prefix_tokens"],
        token_dim=data["hidden_size"] // heads * kv_heads,
        num_attention_heads=kv_heads,
        num_layers=data["num_hidden_layers"],
        num_transformer_submodules=1,
        prefix_projection=bool(data.get("prefix_projection", False)),
        encoder_hidden_size=data.get("prefix_projection_hidden_size"),
        inference_mode=True,
    )


def config_to_paddlenlp(config: PrefixTuningConfig, projection: bool, dtype: str) -> dict[str, Any]:
    """PaddleNLP's ``prefix_config.json`` content for ``config`` (``projection``: whether the
    encoder weights are written)."""
    if config.task_type not in (None, "CAUSAL_LM") or (config.num_transformer_submodules or 1) != 1:
        raise ConfigError(
            "PrefixTuningConfig",
            "task_type",
            config.task_type,
            "CAUSAL_LM to save in PaddleNLP's format (PaddleNLP has prefix tuning for causal LMs only)",
        )
    if config.modules_to_save:
        raise ConfigError(
            "PrefixTuningConfig",
            "modules_to_save",
            config.modules_to_save,
            "empty to save in PaddleNLP's format (its prefix model saves the prefix encoder only)",
        )
    for field in ("token_dim", "num_attention_heads", "num_layers"):
        if getattr(config, field) is None:
            raise ConfigError(
                "PrefixTuningConfig", field, None, "set (the adapter's config is resolved when it is injected)"
            )
    return {
        "dtype": dtype,
        "hidden_size": config.token_dim,
        "multi_query_group_num": None,
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_layers,
        "num_prefix_tokens": config.num_virtual_tokens,
        "prefix_dropout": 0.0,
        "prefix_projection": projection,
        "prefix_projection_hidden_size": config.encoder_hidden_size,
        "tensor_parallel_degree": -1,
    }


def state_from_paddlenlp(
    config: PrefixTuningConfig, tensors: dict[str, np.ndarray], path: str, pre_caches: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Canonical ``(tensors, extra_tensors)`` from PaddleNLP's prefix encoder weights.

    For a projection, ``pre_caches`` (the contents of ``pre_caches.npy``, when present) gives
    the table when it agrees with the one computed from the weights: it is the table the
    writer's framework computed, so an adapter read back is bit-identical to the one written.
    """
    layers, tokens, width = config.num_layers, config.num_virtual_tokens, config.token_dim
    expected = {"0.weight": (tokens, 2 * layers * width)}
    if config.prefix_projection:
        hidden = _check(tensors, "1.weight", 2, path).shape[1]
        expected = {
            "0.weight": (tokens, width),
            "1.weight": (width, hidden),
            "1.bias": (hidden,),
            "3.weight": (hidden, 2 * layers * width),
            "3.bias": (2 * layers * width,),
        }
    for key, shape in expected.items():
        if key not in tensors:
            raise AdapterLoadError(
                f"{path}: no tensor {key!r}, which the prefix encoder of prefix_config.json needs "
                f"(tensors present: {', '.join(sorted(tensors)) or 'none'})"
            )
        if tuple(tensors[key].shape) != shape:
            raise AdapterLoadError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, prefix_config.json needs {shape}"
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise AdapterLoadError(f"{path}: unexpected tensors {unexpected} for the prefix encoder of prefix_config.json")
    if not config.prefix_projection:
        return {TABLE: sections_to_interleaved(tensors["0.weight"], layers)}, {}
    embedding, w1, b1, w3, b3 = (tensors[key] for key in _PROJECTION_KEYS)
    hidden64 = np.tanh(embedding.astype(np.float64) @ w1.astype(np.float64) + b1.astype(np.float64))
    table = (hidden64 @ w3.astype(np.float64) + b3.astype(np.float64)).astype(embedding.dtype)
    saved = _table_from_pre_caches(config, pre_caches)
    if saved is not None and saved.dtype == table.dtype and np.allclose(saved, table, rtol=1e-4, atol=1e-5):
        table = saved
    extra = {
        ENCODER + "embedding.weight": embedding,
        ENCODER + "transform.0.weight": np.ascontiguousarray(w1.T),
        ENCODER + "transform.0.bias": b1,
        ENCODER + "transform.2.weight": np.ascontiguousarray(sections_to_interleaved(w3, layers).T),
        ENCODER + "transform.2.bias": sections_to_interleaved(b3, layers),
    }
    return {TABLE: sections_to_interleaved(table, layers)}, extra


def state_to_paddlenlp(
    config: PrefixTuningConfig, tensors: dict[str, np.ndarray], extra: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], bool]:
    """PaddleNLP's prefix encoder weights for a canonical state, and whether they are the
    projection form."""
    if TABLE not in tensors:
        raise AdapterLoadError(
            f"the prefix adapter has no {TABLE!r} tensor (tensors: {', '.join(sorted(tensors)) or 'none'})"
        )
    others = sorted(set(tensors) - {TABLE})
    if others:
        raise AdapterLoadError(
            f"tensors {others} have no place in PaddleNLP's prefix files (only the prefix encoder is saved)"
        )
    layers = config.num_layers
    names = [
        ENCODER + name
        for name in (
            "embedding.weight",
            "transform.0.weight",
            "transform.0.bias",
            "transform.2.weight",
            "transform.2.bias",
        )
    ]
    if config.prefix_projection and all(name in extra for name in names):
        embedding, w0, b0, w2, b2 = (extra[name] for name in names)
        return {
            "0.weight": embedding,
            "1.weight": np.ascontiguousarray(w0.T),
            "1.bias": b0,
            "3.weight": interleaved_to_sections(np.ascontiguousarray(w2.T), layers),
            "3.bias": interleaved_to_sections(b2, layers),
        }, True
    return {"0.weight": interleaved_to_sections(tensors[TABLE], layers)}, False


def pre_caches_bytes(config: PrefixTuningConfig, table: np.ndarray) -> bytes:
    """``pre_caches.npy`` for the canonical output table ``[T, 2 L D]``, as PaddleNLP writes it:
    ``[L, 2, kv_heads, T, head_dim]``."""
    heads = config.num_attention_heads
    sections = interleaved_to_sections(table, config.num_layers)
    cache = sections.reshape(config.num_virtual_tokens, 2, config.num_layers, heads, config.token_dim // heads)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(np.transpose(cache, (2, 1, 3, 0, 4))))
    return buffer.getvalue()


def _table_from_pre_caches(config: PrefixTuningConfig, pre_caches: np.ndarray | None) -> np.ndarray | None:
    """The output table (PaddleNLP's section order) held by ``pre_caches.npy``, or None when
    it is absent or shaped for another config."""
    heads, layers, tokens = config.num_attention_heads, config.num_layers, config.num_virtual_tokens
    shape = (layers, 2, heads, tokens, config.token_dim // heads)
    if pre_caches is None or tuple(pre_caches.shape) != shape:
        return None
    return np.ascontiguousarray(np.transpose(pre_caches, (3, 1, 0, 2, 4)).reshape(tokens, -1))


def _check(tensors: dict[str, np.ndarray], key: str, ndim: int, path: str) -> np.ndarray:
    if key not in tensors:
        raise AdapterLoadError(
            f"{path}: no tensor {key!r}, which a prefix projection needs "
            f"(tensors present: {', '.join(sorted(tensors)) or 'none'})"
        )
    if tensors[key].ndim != ndim:
        raise AdapterLoadError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {ndim}-D")
    return tensors[key]


class PrefixPaddleNLPCodec:
    """Prefix tuning in PaddleNLP's own files (``prefix_config.json``,
    ``prefix_model_state.pdparams``, ``pre_caches.npy``): the codec the PaddleNLP format plugin
    uses for this method (its interface is documented there)."""

    stem = "prefix"

    def read(self, data: dict[str, Any], weights: dict[str, np.ndarray], source: str, directory: Path) -> AdapterState:
        """The canonical state from the config, the encoder weights and ``pre_caches.npy``."""
        config = config_from_paddlenlp(data)
        tensors, extra = state_from_paddlenlp(config, weights, source, _read_npy(directory / PRE_CACHES))
        return AdapterState(config, tensors, extra)

    def write(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        """``(prefix_config.json's data, the encoder weights, {"pre_caches.npy": ...})``."""
        config = state.config
        tensors, projection = state_to_paddlenlp(config, state.tensors, state.extra_tensors)
        table = state.tensors[TABLE]
        data = config_to_paddlenlp(config, projection, table.dtype.name)
        return data, tensors, {PRE_CACHES: pre_caches_bytes(config, table)}


def _read_npy(path: Path) -> np.ndarray | None:
    """An ``.npy`` file's array (no pickled objects), or None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


CODEC = PrefixPaddleNLPCodec()
