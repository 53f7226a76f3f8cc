"""BitFitConfig: which layers get a trainable bias delta."""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from peftplug.config import AdapterConfig
from peftplug.targets import ALL_LINEAR


@dataclasses.dataclass
class BitFitConfig(AdapterConfig):
    """BitFit (Ben Zaken et al., 2021): ``y = W x + b + delta`` on each target layer, where only
    ``delta`` (one vector of ``out_features`` values per layer, initialised to zeros) trains.

    ``target_modules`` follows peftplug's (and HF PEFT's) rules: a list of module names (exact
    or dotted suffix), a regex matched against the whole dotted name, or ``"all-linear"`` (the
    default: every linear layer except the output embedding). ``exclude_modules`` takes a list
    or a regex too. ``modules_to_save`` names modules trained in full and saved beside the
    deltas (a classifier head, say).
    """

    peft_type: ClassVar[str] = "BITFIT"

    target_modules: list[str] | str = ALL_LINEAR
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None

    def validate(self) -> None:
        """``target_modules`` non-empty; every regex (target or exclude) compiles."""
        if self.target_modules == [] or self.target_modules == "":
            self._fail("target_modules", self.target_modules, "at least one module name, a regex, or 'all-linear'")
        for field in ("target_modules", "exclude_modules"):
            value = getattr(self, field)
            if isinstance(value, str):
                try:
                    re.compile(value)
                except re.error as error:
                    self._fail(field, value, f"a valid regular expression ({error})")
