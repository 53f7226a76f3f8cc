"""The PyTorch backend's ``generator``: greedy decoding for ``peftplug generate``."""

from __future__ import annotations

from typing import Any

import torch


def generate(model: Any, tokenizer: Any, text: str, max_new_tokens: int) -> str:
    """Greedy continuation of ``text`` by the torch peft ``model`` (new tokens only, decoded)."""
    model.eval()
    ids = torch.tensor([tokenizer.encode(text, add_bos=True)])
    with torch.no_grad():
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(output[0, ids.shape[1] :].tolist())
