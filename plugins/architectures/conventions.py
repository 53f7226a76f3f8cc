"""The built-in naming conventions: HF transformers' (canonical) and PaddleNLP's."""

from __future__ import annotations

from peftplug.registration import Convention

HF = Convention(
    "hf",
    "Hugging Face transformers' module trees and HF PEFT's adapter keys; PyTorch layouts",
    label="HF",
    library="transformers",
    linear_weight="out_in",
    canonical=True,
)
PADDLE = Convention(
    "paddle",
    "PaddleNLP's module trees and adapter keys; Paddle layouts",
    label="PaddleNLP",
    library="PaddleNLP",
    linear_weight="in_out",
)

BUILTIN_CONVENTIONS = (HF, PADDLE)
