"""IA3Config: HF PEFT's (IA)³ fields, names and defaults."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

from peftplug.config import AdapterConfig


@dataclasses.dataclass
class IA3Config(AdapterConfig):
    """(IA)³ (Liu et al., 2022): a learned vector rescales each target module's activations.

    Field names and defaults are HF PEFT's. ``target_modules`` is a list (exact name or dotted
    suffix), a regex string, ``"all-linear"``, or None for the model family's default.
    ``feedforward_modules`` names the targets whose *input* is scaled (the others' output is):
    a list matched as HF PEFT matches it (the module name ends with the entry), a regex string
    matched against the whole name, or None for the model family's default. When both are
    lists, ``feedforward_modules`` must be a subset of ``target_modules``.
    """

    peft_type: ClassVar[str] = "IA3"
    default_target_fields: ClassVar[dict[str, str | None]] = {
        "target_modules": "ia3",
        "feedforward_modules": "ia3_feedforward",
    }
    # Every field HF PEFT's IA3Config writes is implemented; nothing to accept at a default only.
    hf_fields_at_default: ClassVar[dict[str, Any]] = {}

    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    feedforward_modules: list[str] | str | None = None
    fan_in_fan_out: bool = False
    modules_to_save: list[str] | None = None
    init_ia3_weights: bool = True

    def validate(self) -> None:
        """``feedforward_modules`` a subset of ``target_modules`` when both are lists, as in HF PEFT."""
        if isinstance(self.feedforward_modules, list) and isinstance(self.target_modules, list):
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            if extra:
                self._fail(
                    "feedforward_modules",
                    self.feedforward_modules,
                    f"a subset of target_modules {self.target_modules!r}; not in target_modules: {extra!r}",
                )

    def with_default_targets(self, defaults: dict[str, list[str]]) -> IA3Config:
        """Fill the family's defaults; default feed-forward names that an explicit
        ``target_modules`` list does not hold are left out.

        HF PEFT keeps them, and then cannot read back the config it saved (the subset check
        fails); leaving them out adapts the same modules and keeps the file loadable.
        """
        targets = defaults.get("target_modules", self.target_modules)
        if "feedforward_modules" in defaults and isinstance(targets, list):
            defaults = dict(defaults, feedforward_modules=[m for m in defaults["feedforward_modules"] if m in targets])
        return super().with_default_targets(defaults)

    def is_feedforward(self, module_name: str) -> bool:
        """True when ``module_name`` (dotted, in the base model) is a feed-forward module.

        HF PEFT's rule: a regex string must match the whole name; a list entry matches when the
        name ends with it.
        """
        if isinstance(self.feedforward_modules, str):
            return re.fullmatch(self.feedforward_modules, module_name) is not None
        return any(module_name.endswith(entry) for entry in self.feedforward_modules or [])
