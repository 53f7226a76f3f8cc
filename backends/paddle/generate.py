"""The PaddlePaddle backend's ``generator``: greedy decoding for ``peftplug generate``."""

from __future__ import annotations

from typing import Any

import paddle


def generate(model: Any, tokenizer: Any, text: str, max_new_tokens: int) -> str:
    """Greedy continuation of ``text`` by the PaddleNLP peft ``model`` (PaddleNLP's generate
    returns the new tokens only)."""
    model.eval()
    ids = paddle.to_tensor([tokenizer.encode(text, add_bos=True)], dtype="int64")
    with paddle.no_grad():
        output, _ = model.generate(
            input_ids=ids,
            attention_mask=paddle.ones_like(ids),
            max_new_tokens=max_new_tokens,
            decode_strategy="greedy_search",
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(output[0].tolist())
