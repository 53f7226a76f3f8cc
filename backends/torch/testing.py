"""The PyTorch / transformers driver of the plugin-author kit (:mod:`peftplug.testing.drivers`):
tiny models, a batch, logits, training steps, parameters as numpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from peftplug.testing.drivers import VOCAB, Driver, fixed_ids


class TorchDriver(Driver):
    """PyTorch with transformers models."""

    name = "torch"
    requires = ("torch", "transformers")

    def tiny_model(self, family: str = "llama") -> Any:
        """transformers ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` / ``Qwen2ForCausalLM``."""
        import torch
        import transformers

        torch.set_num_threads(1)
        torch.manual_seed(0)
        if family == "gpt2":
            config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
            return transformers.GPT2LMHeadModel(config).eval()
        config_class, model_class = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        }[family]
        config = config_class(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            attn_implementation="eager",
        )
        return model_class(config).eval()

    def inputs(self) -> dict[str, Any]:
        """``input_ids`` and an all-ones ``attention_mask``."""
        import torch

        ids = torch.from_numpy(fixed_ids())
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def logits(self, model: Any, inputs: dict[str, Any]) -> np.ndarray:
        """``model(**inputs).logits``."""
        import torch

        with torch.no_grad():
            return model(**inputs).logits.float().numpy()

    def train_steps(self, model: Any, inputs: dict[str, Any], steps: int = 3, lr: float = 1e-2) -> None:
        """AdamW on ``requires_grad`` parameters."""
        import torch

        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        for _ in range(steps):
            loss = model(**inputs).logits.float().pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()

    def named_arrays(self, model: Any, trainable: bool | None = None) -> dict[str, np.ndarray]:
        """``named_parameters`` filtered on ``requires_grad``."""
        return {
            name: p.detach().float().numpy().copy()
            for name, p in model.named_parameters()
            if trainable is None or p.requires_grad == trainable
        }
