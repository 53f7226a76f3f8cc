"""TunerModelBase: ``PeftModel.base_model``, HF PEFT's tuner (its ``LoraModel`` / ``IA3Model``), once
for every backend and method.

It holds the user's model as ``.model`` and the adapters' configs, and offers HF PEFT's adapter
methods on the layers it finds in the model (``set_adapter`` with one name or several,
``enable_adapter_layers`` / ``disable_adapter_layers``, ``delete_adapter``, ``merge_adapter``,
``unmerge_adapter``, ``merge_and_unload``, ``unload``), with HF PEFT's trainability rules. Any
other attribute is the user's model's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from peftplug.errors import AdapterStateError, PeftplugError, UnsafeMergeError
from peftplug.model.delegation import DelegatesToInner


class TunerModelBase(DelegatesToInner):
    """The tuner between a :class:`~peftplug.model.peft_model.PeftModel` and the user's model;
    mixed with the framework's module class by each backend. ``peft_config`` is the same dict as
    the ``PeftModel``'s; ``active_adapter`` is a name, or a list of names once several are set."""

    _inner = "model"
    _own = DelegatesToInner._own | {"_peft_ops", "peft_config", "active_adapter"}

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def _attach(self, ops: Any, peft_config: dict[str, Any], active_adapter: str) -> None:
        """Give the tuner the backend's operations and the adapters' configs (called by PeftModel)."""
        self._peft_ops = ops
        self.peft_config = peft_config
        self.active_adapter = active_adapter

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the user's model."""
        return self.model(*args, **kwargs)

    @property
    def active_adapters(self) -> list[str]:
        """The active adapters' names, as a list."""
        return [self.active_adapter] if isinstance(self.active_adapter, str) else list(self.active_adapter)

    # ------------------------------------------------------------------ switching
    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        """Apply ``adapter_name`` (a name, or a list of names applied together): their parameters
        trainable unless ``inference_mode``, every other adapter's frozen. A merged layer is
        unmerged first, with HF PEFT's warning."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        for name in names:
            self.check_adapter(name)
        for module_name, layer in self.adapter_layers():
            held = [n for n in names if n in layer.adapter_names]
            if getattr(layer, "one_active_adapter", False) and len(held) > 1:
                raise AdapterStateError(
                    f"module {module_name!r} (modules_to_save) has copies for adapters {held}; only one of them can "
                    "be active at a time"
                )
        for _, layer in self.adapter_layers():
            if layer.merged:
                warnings.warn(
                    "Adapter cannot be set when the model is merged. Unmerging the model first.",
                    UserWarning,
                    stacklevel=2,
                )
                layer.unmerge()
            layer.set_adapter([n for n in names if n in layer.adapter_names], inference_mode)
        self.active_adapter = adapter_name

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        """Make the parameters of ``adapter_names`` trainable (or frozen), active or not."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for _, layer in self.adapter_layers():
            layer.set_requires_grad(names, requires_grad)

    def enable_adapter_layers(self) -> None:
        """Switch every adapter layer on; the active adapters become trainable again."""
        for _, layer in self.adapter_layers():
            layer.enable_adapters(True)

    def disable_adapter_layers(self) -> None:
        """Switch every adapter layer off (the base model alone; every adapter frozen). Warns, as
        HF PEFT does, when an active adapter trains biases, which stay changed."""
        for name in self.active_adapters:
            bias = getattr(self.peft_config.get(name), "bias", "none")
            if bias != "none":
                warnings.warn(
                    f"Careful, disabling adapter layers with bias configured to be '{bias}' does not produce the "
                    "same output as the base model would without adaption.",
                    UserWarning,
                    stacklevel=2,
                )
        for _, layer in self.adapter_layers():
            layer.enable_adapters(False)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove adapter ``adapter_name`` from every layer and from ``peft_config``. A merged
        adapter is refused; when it was active, the other active ones stay so, or the first
        remaining adapter by name becomes active (with HF PEFT's warning)."""
        self.check_adapter(adapter_name)
        merged = [name for name, layer in self.adapter_layers() if adapter_name in layer.merged_adapters]
        if merged:
            raise AdapterStateError(
                f"cannot delete adapter {adapter_name!r} while it is merged (into {merged[0]!r}); "
                "unmerge_adapter() first"
            )
        old_active = self.active_adapters
        remaining = [n for n in old_active if n != adapter_name]
        del self.peft_config[adapter_name]
        layers = list(self.adapter_layers())
        new_active = None
        for _, layer in (pair for pair in layers if not getattr(pair[1], "auxiliary", False)):
            if adapter_name in layer.adapter_names:
                layer.delete_adapter(adapter_name)
            # HF PEFT's layers all hold the tuner's active list, so each picks its successor: the
            # other active adapters, or else the first of its own by name.
            if adapter_name in old_active:
                chosen = remaining or sorted(layer.adapter_names)[:1]
                layer.set_adapter([n for n in chosen if n in layer.adapter_names])
                new_active = chosen if new_active is None else new_active
        if adapter_name not in old_active:
            new_active = old_active
        elif new_active is None:
            new_active = remaining or sorted(self.peft_config)[:1]
        for _, layer in (pair for pair in layers if getattr(pair[1], "auxiliary", False)):
            was_applied = adapter_name in layer.active_adapters
            if adapter_name in layer.adapter_names:
                layer.delete_adapter(adapter_name)
            if was_applied:
                layer.set_adapter([n for n in new_active[:1] if n in layer.adapter_names])
        if adapter_name in old_active and not remaining and new_active:
            warnings.warn(
                f"Adapter {adapter_name} was active which is now deleted. Setting active adapter to {new_active[0]}.",
                UserWarning,
                stacklevel=2,
            )
        self.active_adapter = new_active[0] if len(new_active) == 1 else new_active

    # ------------------------------------------------------------------ merging
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Fold ``adapter_names`` (default: the active adapters) into the base weights, in place.
        With ``safe_merge`` every merge is first tried on a copy of each layer, and one that would
        put NaN or inf in a weight is an error naming the module and the adapter, before any
        weight is written."""
        names = self.names_or_active(adapter_names)
        if safe_merge:
            self.check_merge_is_finite(names)
        for _, layer in self.adapter_layers():
            layer.merge([n for n in names if n in layer.adapter_names])

    def unmerge_adapter(self) -> None:
        """Take every merged adapter back out of the base weights."""
        for _, layer in self.adapter_layers():
            layer.unmerge()

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> Any:
        """Merge ``adapter_names`` (default: the active adapters) into the base weights and return
        the user's model without adapter layers (``progressbar`` is accepted and ignored)."""
        names = self.names_or_active(adapter_names)
        if safe_merge:
            self.check_merge_is_finite(names)
        return self._unload(merge=True, names=names)

    def unload(self) -> Any:
        """Remove every adapter layer without merging and return the user's model."""
        return self._unload(merge=False, names=[])

    def _unload(self, merge: bool, names: list[str]) -> Any:
        for module_name, layer in list(self.adapter_layers()):
            plain = layer.unload(merge, [n for n in names if n in layer.adapter_names])
            self._peft_ops.replace_module(self.model, module_name, plain)
        return self.model

    def check_merge_is_finite(self, names: list[str]) -> None:
        """Raise :class:`UnsafeMergeError` naming the first module and adapter whose merge would
        put NaN or inf in the base weights; nothing is changed."""
        for module_name, layer in self.adapter_layers():
            bad = layer.unsafe_merge([n for n in names if n in layer.adapter_names])
            if bad is not None:
                raise UnsafeMergeError(
                    f"NaNs detected in the merged weights. The adapter {bad} seems to be broken: merging it into "
                    f"module {module_name!r} would put NaN or inf in its weights; nothing was merged"
                )

    # ------------------------------------------------------------------ helpers
    def adapter_layers(self) -> Iterator[tuple[str, Any]]:
        """(name, layer) of every adapter layer of the user's model, in model order."""
        ops = self._peft_ops
        for name, module in ops.named_modules(self.model):
            if ops.is_adapter_layer(module):
                yield name, module

    def names_or_active(self, adapter_names: list[str] | None) -> list[str]:
        """``adapter_names`` checked, or the active adapters when None."""
        if isinstance(adapter_names, str):
            raise PeftplugError(f"adapter_names must be a list of adapter names, got the string {adapter_names!r}")
        names = list(adapter_names) if adapter_names is not None else self.active_adapters
        for name in names:
            self.check_adapter(name)
        return names

    def check_adapter(self, adapter_name: str) -> None:
        """Raise an error naming ``adapter_name`` and the adapters there are when it is not one."""
        if adapter_name not in self.peft_config:
            known = ", ".join(self.peft_config) or "none"
            raise PeftplugError(f"no adapter named {adapter_name!r}; this model has: {known}")
