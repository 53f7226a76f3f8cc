"""Converting adapters between Hugging Face PEFT (PyTorch) and PaddleNLP (Paddle), either way.

``peftplug.convert(src, dst, to="paddlenlp" | "peft")`` reads ``src`` (format detected), moves
the adapter to the target library's module tree and conventions, and writes ``dst`` in that
library's format, atomically (a failure leaves ``dst`` as it was). :func:`convert_state` does
the in-memory part; loading across frameworks uses it too (:mod:`peftplug.interop.cross_framework`).

What converts (exact up to float rounding; bit-identical tensors on a round trip):

- module paths, from the family's architecture plugin (``model.layers.0`` <-> ``llama.layers.0``;
  :mod:`peftplug.interop.module_tree`), with ``target_modules``, IA3's ``feedforward_modules`` and
  ``modules_to_save`` mapped; tensors kept in the framework's own layout (``modules_to_save``
  copies of Linear layers) transposed;
- fused projections (PaddleNLP Llama's ``fuse_attention_qkv`` / ``fuse_attention_ffn``, GPT-2's
  ``c_attn``): :mod:`peftplug.interop.fused`;
- prefix tuning's position convention (RoPE families): :mod:`peftplug.interop.prefix_positions`; the
  key/value order is the format plugin's business (the canonical state is always HF's).

The family comes from ``architecture=``, else the base config's ``model_type`` (``base_config=``,
a ``config.json`` beside the adapter, or that of the local model its ``base_model_name_or_path``
names), else the adapter's module names (where several families share them, as HF Llama and
Qwen2 do, the one the base model's name mentions); when none tells (prefix adapters name no
module), a clear error lists the known families.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from peftplug.adapter_io import detect_format, read_adapter, write_adapter
from peftplug.interop.fused import compress_rank, join_parts, pad_rank, scaled_alpha, split_parts
from peftplug.interop.module_tree import (
    LIBRARY,
    ConversionError,
    Routed,
    map_module_names,
    module_keys,
    prefix_for,
    representatives,
    route,
    tree_side,
)
from peftplug.interop.name_maps import (
    NameMapError,
    Side,
    architecture_for,
    fitting_architectures,
    map_name_candidates,
)
from peftplug.interop.prefix_positions import positions_differ, rope_spec, rotate_prefix
from peftplug.manager import PluginManager, get_plugin_manager
from peftplug.registration import Architecture, ModuleMap
from peftplug.state import AdapterState

TARGET_SIDE: dict[str, Side] = {"paddlenlp": "paddle", "peft": "hf"}
ADAPTER_SUFFIXES = ("lora_A.weight", "lora_B.weight", "ia3_l", "base_layer.bias")


def convert(
    src: str | Path,
    dst: str | Path,
    to: str = "paddlenlp",
    architecture: str | Architecture | None = None,
    *,
    base_config: Any = None,
    fuse_attention_qkv: bool | None = None,
    fuse_attention_ffn: bool | None = None,
    format: str | None = None,
    manager: PluginManager | None = None,
) -> list[Path]:
    """Convert the adapter in ``src`` for the other library and write it to ``dst``.

    ``to``: ``"paddlenlp"`` (PaddleNLP's module tree, PaddleNLP's files) or ``"peft"`` (HF
    transformers' tree, HF PEFT's files). ``architecture``: a registered family's name when it
    cannot be told from the files. ``base_config``: the base model's config (a dict, a
    transformers / PaddleNLP config, or a path to its ``config.json`` or directory; default: a
    ``config.json`` in ``src``): gives the family, the head counts a fused ``qkv_proj`` needs,
    ``fuse_attention_qkv`` / ``fuse_attention_ffn`` and, for prefix tuning, ``rope_theta``.
    ``format``: the source format when detection should not decide. Returns the files written.
    """
    if to not in TARGET_SIDE:
        raise ConversionError(f"to={to!r}: convert writes 'paddlenlp' or 'peft'")
    manager = manager or get_plugin_manager()
    src = Path(src)
    source_format = format or detect_format(src, manager).name
    state = read_adapter(src, source_format, manager)
    values = base_config_values(base_config if base_config is not None else _beside(src))
    converted = convert_state(
        state,
        TARGET_SIDE[to],
        architecture=architecture,
        positions=positions_of_format(source_format, manager),
        base_config=values,
        fused={"qkv": fuse_attention_qkv, "ffn": fuse_attention_ffn},
        manager=manager,
    )
    return write_adapter(converted, dst, to, manager=manager)


def positions_of_format(format_name: str, manager: PluginManager | None = None) -> Side:
    """The prefix-position convention of a format's files: its declared ``convention``, HF's
    when it declares none."""
    return convention_of(format_name, manager) or "hf"


def convention_of(format_name: str, manager: PluginManager | None = None) -> Side | None:
    """The module tree a registered format's files hold (:attr:`Format.convention`), or None."""
    return (manager or get_plugin_manager()).formats.get(format_name).convention


def convert_state(
    state: AdapterState,
    to: Side,
    *,
    architecture: str | Architecture | None = None,
    positions: Side | None = None,
    base_config: Any = None,
    fused: dict[str, bool | None] | None = None,
    manager: PluginManager | None = None,
    lenient: bool = False,
) -> AdapterState:
    """``state`` in the ``to`` library's module tree (and, for prefix tuning, in its position
    convention; ``positions`` is the convention ``state`` is in). Unchanged when it already is.
    ``lenient``: names the family's map does not cover (a classifier head, a custom module) leave
    the tree as it is instead of raising (loading onto a model checks the names itself)."""
    if to not in ("hf", "paddle"):
        raise ValueError(f"to must be 'hf' or 'paddle', got {to!r}")
    config = state.config
    values = base_config_values(base_config)
    named_base = getattr(config, "base_model_name_or_path", None)
    if not values.get("model_type"):
        values = {**_local_base_config(named_base), **values}
    prefix = prefix_for(config.is_prompt_learning)
    names = module_keys(state.tensors, prefix)
    family = _family(architecture, values, names, named_base, manager)
    if names and family is not None and _tree_side(state, prefix, names, family, to, lenient) != to:
        _check_lora_shapes(state, prefix)
        state = _move_tree(state, family, to, prefix, values, fused or {})
    if config.peft_type == "PREFIX_TUNING" and positions is not None and positions != to:
        if family is None:
            raise ConversionError(_ask_family("a prefix-tuning adapter names no module", manager))
        if positions_differ(family):
            state = rotate_prefix(state, rope_spec(family, config, values), -1 if to == "paddle" else 1)
    return state


def base_config_values(base_config: Any) -> dict[str, Any]:
    """A base model config as a dict: from a dict, a config object, or a ``config.json`` path
    (file or directory)."""
    if base_config is None:
        return {}
    if isinstance(base_config, (str, Path)):
        path = Path(base_config)
        path = path / "config.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ConversionError(f"base_config {str(path)!r} is not a readable config.json: {error}") from error
        if not isinstance(data, dict):
            raise ConversionError(f"base_config {str(path)!r} holds a {type(data).__name__}, not a config object")
        return data
    if isinstance(base_config, dict):
        return dict(base_config)
    if callable(getattr(base_config, "to_dict", None)):
        return dict(base_config.to_dict())
    return dict(vars(base_config))


def _beside(src: Path) -> Path | None:
    return src / "config.json" if (src / "config.json").is_file() else None


def _local_base_config(named_base: str | None) -> dict[str, Any]:
    """The config of the base model an adapter names (``base_model_name_or_path``) when that is
    a local directory holding a readable ``config.json``; else nothing."""
    if not named_base or not (Path(named_base) / "config.json").is_file():
        return {}
    try:
        return base_config_values(Path(named_base))
    except ConversionError:
        return {}


def _family(
    architecture: str | Architecture | None,
    values: dict[str, Any],
    names: list[str],
    named_base: str | None,
    manager: PluginManager | None,
) -> Architecture | None:
    if architecture is not None or values.get("model_type"):
        try:
            return architecture_for(
                architecture, model_type=values.get("model_type"), names=names or None, manager=manager
            )
        except NameMapError as error:
            raise ConversionError(str(error)) from error
    if not names:
        return None
    modules = representatives(_module_names(names))
    named = _named_family(named_base, [family for family, _ in fitting_architectures(modules, manager).values()])
    if named is not None:
        return named
    try:
        return architecture_for(names=modules, manager=manager)
    except NameMapError as error:
        raise ConversionError(f"cannot tell the model family of the adapter's tensors: {error}") from error


def _named_family(named_base: str | None, candidates: list[Architecture]) -> Architecture | None:
    """The one family of several whose module names all fit (HF Llama and Qwen2 share theirs)
    that the base model's name mentions (``Qwen/Qwen2-7B`` -> qwen2); None when not exactly one."""
    if not named_base or len(candidates) < 2:
        return None
    text = named_base.lower()
    named = [family for family in candidates if any(t.lower() in text for t in (family.name, *family.model_types))]
    return named[0] if len(named) == 1 else None


def _module_names(names: list[str]) -> list[str]:
    """Parameter names without the adapter's own suffixes (module paths, or base parameters)."""
    result = []
    for name in names:
        for suffix in ADAPTER_SUFFIXES:
            if name.endswith("." + suffix):
                name = name[: -len(suffix) - 1]
                break
        result.append(name)
    return result


def _ask_family(reason: str, manager: PluginManager | None) -> str:
    known = ", ".join(sorted(a.name for a in (manager or get_plugin_manager()).architectures if a.modules))
    return f"cannot tell the model family: {reason}; pass architecture= (one of: {known}) or base_config="


def _move_tree(
    state: AdapterState,
    family: Architecture,
    to: Side,
    prefix: str,
    values: dict[str, Any],
    fused: dict[str, bool | None],
) -> AdapterState:
    flags = {
        kind: fused.get(kind) if fused.get(kind) is not None else bool(values.get(key))
        for kind, key in (("qkv", "fuse_attention_qkv"), ("ffn", "fuse_attention_ffn"))
    }

    def use_fused(module: ModuleMap) -> bool:
        if to == "hf":
            return True
        target = module.paddle if isinstance(module.paddle, str) else ""
        return (flags["qkv"] and target.endswith("qkv_proj")) or (
            flags["ffn"] and target.endswith("gate_up_fused_proj")
        )

    heads = (values.get("num_attention_heads"), values.get("num_key_value_heads") or values.get("num_attention_heads"))
    routed = route(state.tensors, prefix, family, to, use_fused)
    joined, grew = join_parts(routed, prefix, heads)
    tensors = {**routed.plain, **joined}
    shrank = 1
    if routed.splits:
        tensors, shrank = compress_rank(split_parts(routed, prefix, heads), tensors)
    present = {_module_path(key[len(prefix) :]) for key in tensors if key.startswith(prefix)}
    config = _mapped_config(state, routed, family, to, prefix, present)
    if grew > 1 or shrank > 1:
        config = _rescaled(config, grew, shrank)
        if grew > 1:
            tensors = pad_rank(tensors, config.r)
    return AdapterState(config, tensors, dict(state.extra_tensors))


def _tree_side(
    state: AdapterState, prefix: str, names: list[str], family: Architecture, to: Side, lenient: bool = False
) -> Side:
    """The library whose tree the state's names are in; a tensor that fits neither is named
    (``lenient``: ``to`` is returned instead)."""
    try:
        return tree_side(names, family)
    except NameMapError:
        if lenient:
            return to
    sides = {
        side: [n for n in names if not map_name_candidates(n, family, "paddle" if side == "hf" else "hf")]
        for side in ("hf", "paddle")
    }
    side = min(sides, key=lambda s: len(sides[s]))
    other = "paddle" if side == "hf" else "hf"
    raise ConversionError(
        f"tensor {prefix + sides[side][0]!r}: its module has no counterpart in {LIBRARY[other]} for architecture "
        f"{family.name!r} ({len(sides[side])} of the adapter's {len(names)} {LIBRARY[side]} tensors have none; "
        f"is architecture={family.name!r} right?)"
    )


def _module_path(name: str) -> str:
    suffix = next((s for s in ADAPTER_SUFFIXES if name.endswith("." + s)), None)
    return name[: -len(suffix) - 1] if suffix else name.rsplit(".", 1)[0]


def _mapped_config(
    state: AdapterState, routed: Routed, family: Architecture, to: Side, prefix: str, present: set[str]
) -> Any:
    config = state.config
    modules = routed.modules
    by_module: dict[str, set[str]] = {}
    for key in state.tensors:
        if key.startswith(prefix):
            name = key[len(prefix) :]
            suffix = next((s for s in ADAPTER_SUFFIXES if name.endswith("." + s)), None)
            module = name[: -len(suffix) - 1] if suffix else name.rsplit(".", 1)[0]
            by_module.setdefault(module, set()).add(suffix or "")
    updates: dict[str, Any] = {}
    adapted = sorted(m for m, s in by_module.items() if s & {"lora_A.weight", "ia3_l"})
    if hasattr(config, "target_modules") and config.target_modules is not None:
        updates["target_modules"] = map_module_names(config.target_modules, adapted, modules, family, to, present)
    if getattr(config, "feedforward_modules", None) is not None:
        feedforward = [m for m in adapted if state.tensors[f"{prefix}{m}.ia3_l"].shape[0] == 1]
        updates["feedforward_modules"] = map_module_names(
            config.feedforward_modules, feedforward, modules, family, to, present
        )
    if hasattr(config, "fan_in_fan_out") and adapted:
        # transformers' Conv1D stores [in, out] (HF PEFT's fan_in_fan_out); Paddle's Linear needs no flag
        updates["fan_in_fan_out"] = to == "hf" and any(m.kind == "conv1d" for m in family.modules)
    entries = getattr(config, "modules_to_save", None)
    if entries:
        saved = sorted(
            m for m, s in by_module.items() if "" in s and any(m == e or m.endswith("." + e) for e in entries)
        )
        if saved:
            updates["modules_to_save"] = map_module_names(entries, saved, modules, family, to, present)
    return dataclasses.replace(config, **updates) if updates else config


def _rescaled(config: Any, grew: int, shrank: int) -> Any:
    if getattr(config, "rank_pattern", None) or getattr(config, "alpha_pattern", None):
        raise ConversionError(
            f"LoraConfig rank_pattern={config.rank_pattern!r} / alpha_pattern={config.alpha_pattern!r}: a fused "
            "projection changes the rank, which per-module ranks cannot follow here; convert without them"
        )
    rank = config.r * grew // shrank
    return dataclasses.replace(
        config, r=rank, lora_alpha=scaled_alpha(config.lora_alpha, config.r, rank, config.use_rslora)
    )


def _check_lora_shapes(state: AdapterState, prefix: str) -> None:
    """Every lora_A has its lora_B, ranks agree and equal ``r`` (or its rank_pattern entry)."""
    config = state.config
    tensors = state.tensors
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        b_key = key[: -len("lora_A.weight")] + "lora_B.weight"
        if b_key not in tensors:
            raise ConversionError(f"tensor {key!r} has no {b_key!r} beside it")
        b = tensors[b_key]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConversionError(
                f"tensor {key!r} has shape {list(a.shape)} and {b_key!r} has shape {list(b.shape)}: "
                "lora_A [r, in] and lora_B [out, r] must share r"
            )
        if not getattr(config, "rank_pattern", None) and a.shape[0] != getattr(config, "r", a.shape[0]):
            raise ConversionError(
                f"tensor {key!r} has shape {list(a.shape)}: rank {a.shape[0]}, but the config's r is {config.r}"
            )


__all__ = [
    "ConversionError",
    "LIBRARY",
    "base_config_values",
    "convention_of",
    "convert",
    "convert_state",
    "positions_of_format",
]
