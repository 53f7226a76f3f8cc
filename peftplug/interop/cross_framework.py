"""Loading and saving across frameworks without an explicit convert step.

:func:`state_for_model`: a state read from files is moved to the model's library (its module
tree; for prefix tuning, its position convention) before it is loaded, so
``PeftModel.from_pretrained(paddle_model, dir_saved_from_torch)`` and the reverse just work.
:func:`state_for_format`: an adapter saved in a format is put in that format's convention
(:attr:`~peftplug.registration.Format.convention`): HF PEFT files hold HF's module names and
prefix positions even when a Paddle model writes them, PaddleNLP files PaddleNLP's even when a
torch model does, so the format alone tells an adapter's convention.

The model's convention is its backend's (:attr:`Backend.convention
<peftplug.registration.Backend>`: ``torch`` -> ``"hf"``, ``paddle`` -> ``"paddle"``), its family its
config's ``model_type``; a model of a family without a module map, or of a backend that declares
no convention, gets the state unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftplug.adapter_io import detect_format
from peftplug.interop.convert import base_config_values, convention_of, convert_state, positions_of_format
from peftplug.interop.name_maps import NameMapError, architecture_for
from peftplug.manager import get_plugin_manager
from peftplug.registration import Architecture
from peftplug.state import AdapterState


def format_of(directory: str | Path, format: str | None) -> str:
    """The format name of the adapter in ``directory`` (``format`` when given)."""
    return format or detect_format(Path(directory)).name


def state_for_model(state: AdapterState, model: Any, format_name: str) -> AdapterState:
    """``state`` (read from files in ``format_name``) in ``model``'s library's tree and conventions."""
    found = _model_family(model)
    if found is None:
        return state
    side, family, values = found
    fused = {"qkv": bool(values.get("fuse_attention_qkv")), "ffn": bool(values.get("fuse_attention_ffn"))}
    return convert_state(
        state,
        side,
        architecture=family,
        positions=positions_of_format(format_name),
        base_config=values,
        fused=fused,
        lenient=True,
    )


def state_for_format(state: AdapterState, model: Any, format_name: str) -> AdapterState:
    """``state`` taken from ``model``, in the module tree and prefix positions of ``format_name``'s
    files (a Paddle model's adapter saved in HF PEFT's format gets HF's module names, a torch
    model's saved in PaddleNLP's gets PaddleNLP's). A module the family's map does not cover is
    an error naming its tensor, raised before anything is written."""
    target = convention_of(format_name)
    found = _model_family(model)
    if target is None or found is None or found[0] == target:
        return state
    side, family, values = found
    return convert_state(state, target, architecture=family, positions=side, base_config=values)


def _model_family(model: Any) -> tuple[str, Architecture, dict[str, Any]] | None:
    """The model's convention, family and base config values; None when it has no map."""
    manager = get_plugin_manager()
    backend = manager.hook.peftplug_detect_backend(model=model)
    side = manager.backends.get(backend).convention if backend in manager.backends else None
    config = getattr(model, "config", None)
    values = base_config_values(config) if config is not None else {}
    if side is None or not values.get("model_type"):
        return None
    try:
        family = architecture_for(model_type=values["model_type"], manager=manager)
    except NameMapError:
        return None
    if side not in family.conventions:
        return None
    return side, family, values
