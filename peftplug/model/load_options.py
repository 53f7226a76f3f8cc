"""The keywords HF PEFT's ``PeftModel.from_pretrained`` takes beyond peftplug's own, checked
before anything is loaded: each is accepted with the behaviour documented here, and any other
keyword is an error naming it (never silently ignored).

- ``revision``: peftplug reads local directories only, so there is nothing to pick a revision of;
  accepted and unused (a Hub id is refused by the path check, naming it).
- ``torch_dtype``, ``device_map``: HF PEFT applies them to the *base* model where it loads one
  (``AutoPeftModel*``); ``PeftModel.from_pretrained`` leaves the model it is given as it is, as HF
  PEFT does. ``device_map`` must be a device map transformers takes: ``"auto"``, ``"cpu"``,
  ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``, a device, or a dict such as
  ``{"": device}``.
- ``torch_device``: where HF PEFT reads the file's tensors before copying them into the adapter;
  peftplug copies into the adapter's parameters, which sit beside their base layer, so the
  result is the same and the keyword changes nothing.
- ``low_cpu_mem_usage``: HF PEFT makes the adapter on the meta device first; peftplug makes it
  directly (the same weights); accepted, changes nothing.
- ``ephemeral_gpu_offload``: a GPU-only speed-up of HF PEFT for modules offloaded to the CPU;
  peftplug does not offload, so it changes nothing (on a CPU there is nothing to offload to).
- ``autocast_adapter_dtype``: True (HF PEFT's default) is what peftplug always does: adapter
  weights of a float16 / bfloat16 base are float32. False keeps them in the base's dtype, as HF
  PEFT does, on backends that can (torch); elsewhere it is refused, naming the keyword.
"""

from __future__ import annotations

from typing import Any

from peftplug.errors import ConfigError
from peftplug.manager import get_plugin_manager

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# HF PEFT keywords that fetch from the Hugging Face Hub or change loading in ways peftplug has not.
UNSUPPORTED = {
    "cache_dir": "peftplug reads local directories only (nothing is downloaded)",
    "token": "peftplug reads local directories only (nothing is downloaded)",
    "use_auth_token": "peftplug reads local directories only (nothing is downloaded)",
    "force_download": "peftplug reads local directories only (nothing is downloaded)",
    "local_files_only": "peftplug reads local directories only (nothing is downloaded)",
    "proxies": "peftplug reads local directories only (nothing is downloaded)",
    "key_mapping": "peftplug maps keys through the model family's registered module maps, not a user mapping",
    "ignore_mismatched_sizes": "a tensor of another shape is an error naming it",
}
ACCEPTED = (
    "revision",
    "torch_dtype",
    "device_map",
    "torch_device",
    "low_cpu_mem_usage",
    "ephemeral_gpu_offload",
    "autocast_adapter_dtype",
)


def check_load_options(owner: str, options: dict[str, Any], model: Any) -> None:
    """Refuse, naming it, any keyword of ``options`` that ``owner`` (``"PeftModel.from_pretrained"``)
    does not take, and a value of ``device_map`` or ``autocast_adapter_dtype`` it cannot honour
    for ``model`` (None: a model still to be loaded; its backend's support is checked then)."""
    for keyword, value in options.items():
        if keyword in UNSUPPORTED:
            raise ConfigError(owner, keyword, value, f"not supported: {UNSUPPORTED[keyword]}")
        if keyword not in ACCEPTED:
            raise ConfigError(
                owner,
                keyword,
                value,
                f"unknown keyword; the keywords HF PEFT's take that peftplug has: {', '.join(ACCEPTED)}",
            )
    autocast = options.get("autocast_adapter_dtype", True)
    if not isinstance(autocast, bool):
        raise ConfigError(owner, "autocast_adapter_dtype", autocast, "True or False")
    if autocast is False and model is not None and not hasattr(_backend_of(model), "keep_adapter_in_base_dtype"):
        raise ConfigError(
            owner,
            "autocast_adapter_dtype",
            False,
            f"True on backend {get_plugin_manager().detect_backend(model)!r}: it keeps adapters of float16 / "
            "bfloat16 bases in float32",
        )
    if not _is_device_map(options.get("device_map")):
        raise ConfigError(
            owner,
            "device_map",
            options["device_map"],
            f'None, one of {", ".join(DEVICE_MAP_STRATEGIES)}, a device ("cpu", "cuda:0", 0), or a dict '
            'of module name -> device such as {"": "cpu"}',
        )


def apply_load_options(peft_model: Any, adapter_name: str, options: dict[str, Any]) -> None:
    """What the checked ``options`` change once adapter ``adapter_name`` is loaded:
    ``autocast_adapter_dtype=False`` casts its layers' parameters to their base weights' dtype."""
    if options.get("autocast_adapter_dtype", True) is False:
        ops = peft_model._peft_ops
        for _, layer in peft_model._adapter_layers():
            if adapter_name in layer.adapter_names:
                ops.keep_adapter_in_base_dtype(layer, adapter_name)


def _backend_of(model: Any) -> Any:
    """The loaded backend operations of ``model``."""
    manager = get_plugin_manager()
    return manager.backends.get(manager.detect_backend(model)).load()


def _is_device_map(value: Any) -> bool:
    if value is None or _is_device(value):
        return True
    if isinstance(value, str):
        return value in DEVICE_MAP_STRATEGIES
    return isinstance(value, dict) and all(
        isinstance(k, str) and (_is_device(v) or v == "disk") for k, v in value.items()
    )


def _is_device(value: Any) -> bool:
    """A device as transformers names one: a framework device object, an index, or a device string."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    if isinstance(value, str):
        kind = value.split(":")[0]
        return kind in ("cpu", "cuda", "mps", "xpu", "npu", "hpu", "meta", "gpu")
    return type(value).__name__ in ("device", "Place", "CPUPlace", "CUDAPlace")
