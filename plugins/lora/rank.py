"""LoRA's rule when fusing modules changes the rank: keep ``scaling`` the same.

``scaling`` is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA); conversion stacks the
ranks of fused modules (``r`` -> ``parts * r``) or gives them back, and ``B @ A`` is unchanged,
so ``lora_alpha`` follows the rank.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from peftplug.errors import ConfigError


def scaled_alpha(alpha: Any, old_rank: int, new_rank: int, rslora: bool) -> Any:
    """``lora_alpha`` keeping ``scaling`` when the rank goes from ``old_rank`` to ``new_rank``."""
    if rslora:
        return alpha * math.sqrt(new_rank / old_rank)
    if (alpha * new_rank) % old_rank == 0:
        return type(alpha)((alpha * new_rank) // old_rank) if isinstance(alpha, int) else alpha * new_rank / old_rank
    return alpha * new_rank / old_rank


def rescale_rank(config: Any, new_rank: int) -> Any:
    """``config`` at rank ``new_rank`` with the same ``scaling``; per-module ranks cannot follow."""
    if config.rank_pattern or config.alpha_pattern:
        raise ConfigError(
            type(config).__name__,
            "rank_pattern",
            {"rank_pattern": config.rank_pattern, "alpha_pattern": config.alpha_pattern},
            "empty: a fused projection changes the rank, which per-module ranks cannot follow here; "
            "convert without them",
        )
    alpha = scaled_alpha(config.lora_alpha, config.r, new_rank, config.use_rslora)
    return dataclasses.replace(config, r=new_rank, lora_alpha=alpha)
