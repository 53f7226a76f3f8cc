"""AdapterLayerBookkeeping: the part of an adapter layer that is the same on every framework.

Which adapters a layer holds, which are active, merged or switched off, and what deleting or
unloading one means, are questions about names, not tensors. Each backend's base layer
(``TorchAdapterLayer``, ``PaddleAdapterLayer``) mixes this class in before its framework's
module class and supplies three small methods for what does differ: how a per-adapter container
lists its entries, how a parameter is frozen, and how an entry is removed.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any


class AdapterLayerBookkeeping:
    """Active, disabled and merged adapters of one layer wrapping ``self.base_layer``.

    A method's layer keeps its per-adapter parameters in containers named in
    ``adapter_layer_names`` and its per-adapter numbers in dicts named in ``adapter_value_names``,
    and folds one adapter into the base weights and back out in ``_merge_one`` / ``_unmerge_one``.
    """

    adapter_layer_names: tuple[str, ...] = ()
    adapter_value_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False

    # ------------------------------------------------------------ for the backend's base layer
    def _entries(self, container: Any) -> dict[str, Any]:
        """The per-adapter entries of one of this framework's containers, by adapter name."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _entries()")

    def _set_trainable(self, holder: Any, trainable: bool) -> None:
        """Make one adapter's parameter (or module of parameters) trainable or frozen."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _set_trainable()")

    def _remove_entry(self, container: Any, name: str) -> None:
        """Remove adapter ``name``'s entry from one of this framework's containers, if present."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _remove_entry()")

    def _adapters_changed(self) -> None:
        """Called after any change of the adapters a forward applies (override to precompute)."""

    # ------------------------------------------------------------ the AdapterLayer protocol
    @property
    def adapter_names(self) -> list[str]:
        """Every adapter this layer holds, in the order they were added."""
        names: dict[str, None] = {}
        for attribute in self.adapter_layer_names:
            names.update(dict.fromkeys(self._entries(getattr(self, attribute))))
        return list(names)

    @property
    def merged(self) -> bool:
        """True while some adapter is folded into the base weights."""
        return bool(self.merged_adapters)

    def get_base_layer(self) -> Any:
        """The module this layer wraps."""
        return self.base_layer

    @property
    def weight(self) -> Any:
        """The wrapped module's weight: model code reads it through the wrapper (T5's ``self.wo.weight``)."""
        return self.get_base_layer().weight

    @property
    def bias(self) -> Any:
        """The wrapped module's bias, for the same reason as :attr:`weight`."""
        return getattr(self.get_base_layer(), "bias", None)

    def set_adapter(self, names: list[str], inference_mode: bool = False) -> None:
        """Apply ``names`` in forward; their parameters trainable unless ``inference_mode``, every
        other adapter's frozen (HF PEFT's ``BaseTunerLayer.set_adapter``)."""
        self.active_adapters = list(names)
        for attribute in self.adapter_layer_names:
            for name, holder in self._entries(getattr(self, attribute)).items():
                self._set_trainable(holder, name in names and not inference_mode)
        self._adapters_changed()

    def set_requires_grad(self, names: list[str], requires_grad: bool = True) -> None:
        """Make the parameters of the adapters ``names`` trainable (or frozen), leaving the others."""
        for attribute in self.adapter_layer_names:
            for name, holder in self._entries(getattr(self, attribute)).items():
                if name in names:
                    self._set_trainable(holder, requires_grad)

    def enable_adapters(self, enabled: bool) -> None:
        """Switch every adapter on (the active ones trainable again, as HF PEFT makes them) or off
        (every adapter frozen; a merge undone first)."""
        if enabled:
            self.disabled = False
            self.set_adapter(self.active_adapters)
            return
        if self.merged:
            self.unmerge()
        for attribute in self.adapter_layer_names:
            for holder in self._entries(getattr(self, attribute)).values():
                self._set_trainable(holder, False)
        self.disabled = True
        self._adapters_changed()

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` (its parameters and numbers) from this layer. When it was
        active, the other active ones stay so (else the first remaining adapter by name becomes
        active and trainable), as HF PEFT chooses."""
        if name in self.merged_adapters:
            raise RuntimeError(f"adapter {name!r} is merged; unmerge it before deleting it")
        for attribute in self.adapter_layer_names:
            self._remove_entry(getattr(self, attribute), name)
        for attribute in self.adapter_value_names:  # dicts, or modules held per adapter (dropout)
            values = getattr(self, attribute)
            if name in values:
                del values[name]
        if name in self.active_adapters:
            remaining = [n for n in self.active_adapters if n != name]
            self.set_adapter(remaining or sorted(self.adapter_names)[:1])
        self._adapters_changed()

    def unload(self, merge: bool, names: list[str]) -> Any:
        """The base module to put back: with ``names`` merged into it if ``merge``, else restored."""
        if merge:
            self.merge(names)
        else:
            self.unmerge()
        return self.get_base_layer()

    def merge(self, names: list[str]) -> None:
        """Fold each adapter of ``names`` not merged yet into the base layer, in order; warns as
        HF PEFT does when some adapter is merged already."""
        if self.merged:
            names = [name for name in names if name not in self.merged_adapters]
            if names:
                warnings.warn(
                    f"Already following adapters were merged {','.join(self.merged_adapters)}. "
                    f"You are now additionally merging {','.join(names)}.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn("All adapters are already merged, nothing to do.", UserWarning, stacklevel=2)
        for name in names:
            self._merge_one(name)
            self.merged_adapters.append(name)
        self._adapters_changed()

    def unsafe_merge(self, names: list[str]) -> str | None:
        """The first adapter of ``names`` whose merge would put NaN or inf in the base weights,
        or None: the merges are tried on a copy of the base layer, which is left as it was."""
        original = self.base_layer
        self.base_layer = copy.deepcopy(original)
        try:
            for name in names:
                if name in self.merged_adapters:
                    continue
                self._merge_one(name)
                if not self._finite(self.base_layer):
                    return name
            return None
        finally:
            self.base_layer = original

    def _finite(self, module: Any) -> bool:
        """True when every parameter of ``module`` holds finite numbers only (each backend's)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _finite()")

    def unmerge(self) -> None:
        """Take every merged adapter back out of the base layer, last merged first."""
        while self.merged_adapters:
            self._unmerge_one(self.merged_adapters.pop())
        self._adapters_changed()

    def _merge_one(self, name: str) -> None:
        """Fold adapter ``name`` into the base layer's weights (each method's layer does it)."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge")

    def _unmerge_one(self, name: str) -> None:
        """Take merged adapter ``name`` back out of the base layer's weights."""
        raise NotImplementedError(f"{type(self).__name__} cannot unmerge")

    def _rows_by_adapter(self, row_adapters: list[str], rows: int) -> dict[str, list[int]]:
        """``{adapter name: row indices}`` of a mixed batch (rows of ``"__base__"`` or of an adapter
        this layer does not hold run on the base layer alone, under the name ``"__base__"``);
        a wrong number of rows, or a merged adapter, is a ValueError (HF PEFT's messages)."""
        if len(row_adapters) != rows:
            raise ValueError(
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(row_adapters)} and {rows} respectively."
            )
        if self.merged_adapters:
            raise ValueError(
                "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first."
            )
        held = set(self.adapter_names)
        groups: dict[str, list[int]] = {}
        for row, name in enumerate(row_adapters):
            groups.setdefault(name if name in held and not self.disabled else "__base__", []).append(row)
        return groups

    def _take_rows(self, x: Any, rows: list[int]) -> Any:
        """Rows ``rows`` of the tensor ``x`` (its first axis), in that order."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _take_rows()")

    def _put_rows(self, outputs: list[Any], rows: list[int]) -> Any:
        """``outputs`` stacked on the first axis, row ``j`` of them put back at ``rows[j]``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _put_rows()")

    def mixed_batch_forward(self, row_adapters: list[str], x: Any, *args: Any, **kwargs: Any) -> Any:
        """Row ``i`` of ``x`` through this layer with adapter ``row_adapters[i]`` alone: the rows
        of each adapter run as one sub-batch of the layer's own forward (a method's layer may
        override this with one batched product)."""
        groups = self._rows_by_adapter(row_adapters, x.shape[0])
        if len(groups) == 1:
            (name,) = groups
            return self._forward_with(name, x, *args, **kwargs)
        outputs = [self._forward_with(name, self._take_rows(x, rows), *args, **kwargs) for name, rows in groups.items()]
        return self._put_rows(outputs, [row for rows in groups.values() for row in rows])

    def _forward_with(self, name: str, x: Any, *args: Any, **kwargs: Any) -> Any:
        """This layer's own forward with only adapter ``name`` applied (none for ``"__base__"``):
        one sub-batch of a mixed batch."""
        active = self.active_adapters
        self.active_adapters = [] if name == "__base__" else [name]
        self._adapters_changed()
        try:
            return type(self).forward(self, x, *args, **kwargs)
        finally:
            self.active_adapters = active
            self._adapters_changed()

    def end_mixed_batch(self) -> None:
        """Called when a mixed batch ends: drop what :meth:`mixed_batch_forward` kept for its
        steps (nothing by default)."""

    def _active_unmerged(self) -> list[str]:
        """The adapters forward applies: active and not merged, none while switched off."""
        if self.disabled:
            return []
        return [n for n in self.active_adapters if n not in self.merged_adapters]
