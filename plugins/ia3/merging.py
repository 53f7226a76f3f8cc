"""IA3's unmerge, framework-free: dividing by the learned vectors is inexact, and says so."""

from __future__ import annotations

import warnings

UNMERGE_EPSILON = 1e-8  # HF PEFT's guard against dividing by zero


class InexactUnmerge:
    """Mixed into IA3 layers before their backend's base layer: ``unmerge`` warns first."""

    merged_adapters: list[str]

    def unmerge(self) -> None:
        """Divide the merged vectors back out, last merged first; warns that this is inexact."""
        if self.merged_adapters:
            warnings.warn(
                "unmerging IA3 is inexact: the base weights are divided by the learned vectors, "
                "which rounds, and a zero in a vector cannot be undone",
                UserWarning,
                stacklevel=2,
            )
        super().unmerge()  # type: ignore[misc]
