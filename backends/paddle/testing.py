"""The Paddle / PaddleNLP driver of the plugin-author kit (:mod:`peftplug.testing.drivers`):
tiny models, a batch, logits, training steps, parameters as numpy."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from peftplug.testing.drivers import VOCAB, Driver, fixed_ids


class PaddleDriver(Driver):
    """PaddlePaddle with PaddleNLP models."""

    name = "paddle"
    requires = ("paddle", "paddlenlp")

    def tiny_model(self, family: str = "llama") -> Any:
        """paddlenlp ``LlamaForCausalLM`` (only ``llama``)."""
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
        import paddle
        from paddlenlp import transformers

        paddle.seed(0)
        if family != "llama":
            raise ValueError(f"the paddle driver builds only 'llama', not {family!r}")
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
        )
        model = transformers.LlamaForCausalLM(config)
        model.eval()
        return model

    def inputs(self) -> dict[str, Any]:
        """``input_ids`` only (PaddleNLP's Llama builds its causal mask itself)."""
        import paddle

        return {"input_ids": paddle.to_tensor(fixed_ids(), dtype="int64")}

    @staticmethod
    def _scores(output: Any) -> Any:
        return output[0] if isinstance(output, (tuple, list)) else output.logits

    def logits(self, model: Any, inputs: dict[str, Any]) -> np.ndarray:
        """The first output (PaddleNLP returns a tuple or an output object)."""
        import paddle

        with paddle.no_grad():
            return self._scores(model(**inputs)).astype("float32").numpy()

    def train_steps(self, model: Any, inputs: dict[str, Any], steps: int = 3, lr: float = 1e-2) -> None:
        """AdamW on parameters with ``stop_gradient`` False."""
        import paddle

        model.train()
        optimizer = paddle.optimizer.AdamW(
            learning_rate=lr, parameters=[p for p in model.parameters() if not p.stop_gradient]
        )
        for _ in range(steps):
            loss = self._scores(model(**inputs)).astype("float32").pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
        model.eval()

    def named_arrays(self, model: Any, trainable: bool | None = None) -> dict[str, np.ndarray]:
        """``named_parameters`` filtered on ``not stop_gradient``."""
        return {
            name: p.astype("float32").numpy().copy()
            for name, p in model.named_parameters()
            if trainable is None or (not p.stop_gradient) == trainable
        }
