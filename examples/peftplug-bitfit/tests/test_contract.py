"""BitFit against peftplug's method contract, on every backend the plugin claims.

Run from this directory with ``pytest`` (pyproject.toml turns on ``-p peftplug.testing``).
"""

from __future__ import annotations

from peftplug.testing import MethodContract
from peftplug_bitfit import BitFitConfig


class TestBitFitContract(MethodContract):
    """Inject, train step, save/load round trip and merge, from peftplug.testing."""

    method = "bitfit"
    backends = ("torch", "paddle")

    def make_config(self, backend: str) -> BitFitConfig:
        """Bias deltas on the attention query/value and the MLP down projection."""
        return BitFitConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj", "down_proj"])
