"""AdapterState: an adapter's config and tensors, independent of any framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from peftplug.config import AdapterConfig


@dataclass
class AdapterState:
    """The canonical in-memory adapter: what formats read and write, what backends load.

    ``tensors`` maps names to numpy arrays, named and laid out as HF PEFT saves them
    (``base_model.model.<module path>.lora_A.weight``, shape ``[r, in]``); each backend converts
    its own layout at its edge. ``extra_tensors`` holds what peftplug keeps beyond HF PEFT's file
    (P-tuning's and the prefix projection's encoder weights, ``prompt_encoder.<name>``): formats
    write them to a separate file that HF PEFT ignores, so training resumes exactly.
    """

    config: AdapterConfig
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def num_parameters(self) -> int:
        """Total number of values in ``tensors``."""
        return int(sum(a.size for a in self.tensors.values()))

    def nbytes(self) -> int:
        """Total size of ``tensors`` in bytes."""
        return int(sum(a.nbytes for a in self.tensors.values()))
