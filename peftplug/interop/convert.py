"""Converting adapters between naming conventions: Hugging Face PEFT (PyTorch) and PaddleNLP
(Paddle), either way, or any registered convention a family maps.

``peftplug.convert(src, dst, to="paddlenlp" | "peft")`` reads ``src`` (format detected), moves
the adapter to the module tree and conventions of the target format's convention
(:attr:`Format.convention <peftplug.registration.Format>`), and writes ``dst`` in that format,
atomically (a failure leaves ``dst`` as it was). :func:`convert_state` does
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
from peftplug.interop.fused import compress_rank, join_parts, pad_rank, split_parts
from peftplug.interop.module_tree import (
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
    architecture_for,
    canonical_convention,
    convention,
    fitting_architectures,
    library_of,
    unmatched_names,
    weight_layout,
)
from peftplug.interop.prefix_positions import position_shift, rope_spec, rotate_prefix
from peftplug.manager import PluginManager, get_plugin_manager
from peftplug.registration import Architecture, Method, ModuleMap, load_declared
from peftplug.state import AdapterState
from peftplug.tensor_roles import TensorRole, roles_by_suffix, split_suffix


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

    ``to``: the target format, one that declares a convention: ``"paddlenlp"`` (PaddleNLP's
    module tree, PaddleNLP's files) or ``"peft"`` (HF transformers' tree, HF PEFT's files). ``architecture``: a registered family's name when it
    cannot be told from the files. ``base_config``: the base model's config (a dict, a
    transformers / PaddleNLP config, or a path to its ``config.json`` or directory; default: a
    ``config.json`` in ``src``): gives the family, the head counts a fused ``qkv_proj`` needs,
    ``fuse_attention_qkv`` / ``fuse_attention_ffn`` and, for prefix tuning, ``rope_theta``.
    ``format``: the source format when detection should not decide. Returns the files written.
    """
    manager = manager or get_plugin_manager()
    targets = {f.name: f.convention for f in manager.formats if f.convention}
    if to not in targets:
        raise ConversionError(
            f"to={to!r}: convert writes a format of a naming convention: {', '.join(sorted(targets))}"
        )
    src = Path(src)
    source_format = format or detect_format(src, manager).name
    state = read_adapter(src, source_format, manager)
    values = base_config_values(base_config if base_config is not None else _beside(src))
    converted = convert_state(
        state,
        targets[to],
        architecture=architecture,
        positions=positions_of_format(source_format, manager),
        base_config=values,
        fused={"qkv": fuse_attention_qkv, "ffn": fuse_attention_ffn},
        manager=manager,
    )
    return write_adapter(converted, dst, to, manager=manager)


def positions_of_format(format_name: str, manager: PluginManager | None = None) -> str:
    """The prefix-position convention of a format's files: its declared ``convention``, the
    canonical one (HF's) when it declares none."""
    return convention_of(format_name, manager) or canonical_convention(manager).name


def convention_of(format_name: str, manager: PluginManager | None = None) -> str | None:
    """The module tree a registered format's files hold (:attr:`Format.convention`), or None."""
    return (manager or get_plugin_manager()).formats.get(format_name).convention


def convert_state(
    state: AdapterState,
    to: str,
    *,
    architecture: str | Architecture | None = None,
    positions: str | None = None,
    base_config: Any = None,
    fused: dict[str, bool | None] | None = None,
    manager: PluginManager | None = None,
    lenient: bool = False,
) -> AdapterState:
    """``state`` in the module tree of convention ``to`` (a registered
    :class:`~peftplug.registration.Convention`; for prefix tuning, in its position convention too:
    ``positions`` is the convention ``state`` is in). Unchanged when it already is.
    ``lenient``: names the family's map does not cover (a classifier head, a custom module) leave
    the tree as it is instead of raising (loading onto a model checks the names itself)."""
    try:
        convention(to, manager)
    except NameMapError as error:
        raise ConversionError(f"to={to!r}: {error}") from None
    config = state.config
    values = base_config_values(base_config)
    named_base = getattr(config, "base_model_name_or_path", None)
    if not values.get("model_type"):
        values = {**_local_base_config(named_base), **values}
    prefix = prefix_for(config.is_prompt_learning)
    names = module_keys(state.tensors, prefix)
    method = (manager or get_plugin_manager()).method_for_config(config)
    roles = roles_by_suffix(method.tensors)
    family = _family(architecture, values, names, named_base, roles, manager)
    source = _tree_side(state, prefix, names, family, to, lenient, manager) if names and family else to
    if source != to:
        _check_tensors(state, method, roles)
        state = _move_tree(state, family, source, to, prefix, values, fused or {}, method, roles, manager)
    if method.prefix_cache and positions is not None and positions != to:
        if family is None:
            raise ConversionError(_ask_family("a prefix-tuning adapter names no module", manager))
        shift = position_shift(family, positions, to)
        if shift:
            state = rotate_prefix(state, rope_spec(family, config, values), shift)
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
    roles: dict[str, TensorRole],
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
    modules = representatives([split_suffix(name, roles)[0] for name in names])
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


def _ask_family(reason: str, manager: PluginManager | None) -> str:
    known = ", ".join(sorted(a.name for a in (manager or get_plugin_manager()).architectures if a.modules))
    return f"cannot tell the model family: {reason}; pass architecture= (one of: {known}) or base_config="


def _move_tree(
    state: AdapterState,
    family: Architecture,
    source: str,
    to: str,
    prefix: str,
    values: dict[str, Any],
    fused: dict[str, bool | None],
    method: Method,
    roles: dict[str, TensorRole],
    manager: PluginManager | None,
) -> AdapterState:
    flags = {
        kind: fused.get(kind) if fused.get(kind) is not None else bool(values.get(key))
        for kind, key in (("qkv", "fuse_attention_qkv"), ("ffn", "fuse_attention_ffn"))
    }

    def use_fused(module: ModuleMap) -> bool:
        # PaddleNLP's fuse_attention_qkv / fuse_attention_ffn config flags pick its fused modules
        target = module.path(to) or ""
        return (flags["qkv"] and target.endswith("qkv_proj")) or (
            flags["ffn"] and target.endswith("gate_up_fused_proj")
        )

    heads = (values.get("num_attention_heads"), values.get("num_key_value_heads") or values.get("num_attention_heads"))
    routed = route(state.tensors, prefix, family, source, to, use_fused, manager)
    joined, grew = join_parts(routed, prefix, heads, roles)
    tensors = {**routed.plain, **joined}
    shrank = 1
    if routed.splits:
        tensors, shrank = compress_rank(split_parts(routed, prefix, heads, roles), tensors, roles)
    present = {_module_path(key[len(prefix) :], roles) for key in tensors if key.startswith(prefix)}
    config = _mapped_config(state, routed, family, to, prefix, present, method, roles, manager)
    if grew > 1 or shrank > 1:
        config = _rescaled(config, grew, shrank, method)
        if grew > 1:
            tensors = pad_rank(tensors, getattr(config, method.rank_field), roles)
    return AdapterState(config, tensors, dict(state.extra_tensors))


def _tree_side(
    state: AdapterState,
    prefix: str,
    names: list[str],
    family: Architecture,
    to: str,
    lenient: bool,
    manager: PluginManager | None,
) -> str:
    """The convention whose tree the state's names are in; when none covers them all, the
    first tensor of the closest convention that its map does not know is named (``lenient``:
    ``to`` is returned instead)."""
    try:
        return tree_side(names, family, manager)
    except NameMapError:
        if lenient:
            return to
    unmatched = {name: unmatched_names(names, family, name) for name in family.conventions}
    closest = min(unmatched, key=lambda name: len(unmatched[name]))
    library = library_of(closest, manager)
    raise ConversionError(
        f"tensor {prefix + unmatched[closest][0]!r}: its module is no {library} module of architecture "
        f"{family.name!r} ({len(unmatched[closest])} of the adapter's {len(names)} tensors are none in "
        f"{library}, the closest of its conventions {', '.join(family.conventions)}; "
        f"is architecture={family.name!r} right?)"
    )


def _module_path(name: str, roles: dict[str, TensorRole]) -> str:
    module, role = split_suffix(name, roles)
    return module if role else name.rsplit(".", 1)[0]


def _mapped_config(
    state: AdapterState,
    routed: Routed,
    family: Architecture,
    to: str,
    prefix: str,
    present: set[str],
    method: Method,
    roles: dict[str, TensorRole],
    manager: PluginManager | None,
) -> Any:
    config = state.config
    modules = routed.modules
    by_module: dict[str, dict[str, Any]] = {}
    for key, value in state.tensors.items():
        if key.startswith(prefix):
            module, role = split_suffix(key[len(prefix) :], roles)
            if role is None:
                module = module.rsplit(".", 1)[0]
            by_module.setdefault(module, {})[role.suffix if role else ""] = value
    updates: dict[str, Any] = {}
    adapted = sorted(m for m, found in by_module.items() if any(roles[s].required for s in found if s))
    if hasattr(config, "target_modules") and config.target_modules is not None:
        updates["target_modules"] = map_module_names(config.target_modules, adapted, modules, family, to, present)
    for field_name, axis in method.module_fields.items():
        if getattr(config, field_name, None) is None:
            continue
        listed = [
            m for m in adapted if any(s and axis in roles[s].layout(value.shape) for s, value in by_module[m].items())
        ]
        updates[field_name] = map_module_names(getattr(config, field_name), listed, modules, family, to, present)
    if hasattr(config, "fan_in_fan_out") and adapted:
        # HF PEFT's fan_in_fan_out: a module stored unlike the convention's Linear (transformers' Conv1D)
        linear = convention(to, manager).linear_weight
        updates["fan_in_fan_out"] = any(weight_layout(m, to, manager) not in (None, linear) for m in family.modules)
    entries = getattr(config, "modules_to_save", None)
    if entries:
        saved = sorted(
            m for m, s in by_module.items() if "" in s and any(m == e or m.endswith("." + e) for e in entries)
        )
        if saved:
            updates["modules_to_save"] = map_module_names(entries, saved, modules, family, to, present)
    return dataclasses.replace(config, **updates) if updates else config


def _rescaled(config: Any, grew: int, shrank: int, method: Method) -> Any:
    """``config`` at the rank fusing gave, by the method's declared rule (LoRA keeps ``scaling``)."""
    if method.rank_field is None or method.rescale_rank is None:
        raise ConversionError(
            f"method {method.name!r}: fusing modules changes its rank, but it declares no rank_field / rescale_rank"
        )
    rank = getattr(config, method.rank_field) * grew // shrank
    rescale = load_declared(method.rescale_rank, method.name)
    try:
        return rescale(config, rank)
    except ValueError as error:
        raise ConversionError(str(error)) from error


def _check_tensors(state: AdapterState, method: Method, roles: dict[str, TensorRole]) -> None:
    """Each adapted module has every required tensor, each in a declared layout, and their
    rank axes agree with each other and with the config's rank (unless per-module ranks)."""
    config = state.config
    modules: dict[str, dict[str, Any]] = {}
    for key, value in state.tensors.items():
        module, role = split_suffix(key, roles)
        if role is not None:
            modules.setdefault(module, {})[role.suffix] = value
    required = [suffix for suffix, role in roles.items() if role.required]
    per_module_ranks = bool(getattr(config, "rank_pattern", None))
    config_rank = getattr(config, method.rank_field, None) if method.rank_field else None
    for module, found in modules.items():
        missing = [suffix for suffix in required if suffix not in found]
        if missing and len(missing) < len(required):
            raise ConversionError(f"module {module!r} has {sorted(found)} but no {missing[0]!r} beside them")
        ranks = {}
        for suffix, value in found.items():
            try:
                ranks[suffix] = roles[suffix].size_of(tuple(value.shape), "rank")
            except ValueError as error:
                raise ConversionError(f"tensor {module}.{suffix}: {error}") from None
        ranked = sorted((suffix, rank) for suffix, rank in ranks.items() if rank is not None)
        shapes = " and ".join(
            f"{module + '.' + suffix!r} has shape {list(found[suffix].shape)}" for suffix, _ in ranked
        )
        if len({rank for _, rank in ranked}) > 1:
            raise ConversionError(f"tensor {shapes}: their rank axes differ")
        if ranked and config_rank is not None and not per_module_ranks and ranked[0][1] != config_rank:
            raise ConversionError(
                f"tensor {shapes}: rank {ranked[0][1]}, but the config's {method.rank_field} is {config_rank}"
            )


__all__ = [
    "ConversionError",
    "base_config_values",
    "convention_of",
    "convert",
    "convert_state",
    "positions_of_format",
]
