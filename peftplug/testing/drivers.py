"""Per-backend test drivers: a tiny model, a batch, logits as numpy, a few training steps.

The contract tests (:mod:`peftplug.testing.contract`) speak only to a :class:`Driver`, so one
test body runs on every backend a method claims. Frameworks are imported when a driver is used,
never when this module is imported.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from typing import Any

import numpy as np

VOCAB = 128


class Driver:
    """What a contract test needs from one framework. Subclasses implement each method."""

    name: str = ""
    requires: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why this backend cannot run here (a package is not installed), or None."""
        absent = [module for module in self.requires if importlib.util.find_spec(module) is None]
        return f"backend {self.name!r} needs {', '.join(absent)}, not installed" if absent else None

    def tiny_model(self, family: str = "llama") -> Any:
        """A tiny causal LM of ``family`` (hidden 32, 2 layers, vocabulary 128, untied
        embeddings), the same random weights every call, in eval mode."""
        raise NotImplementedError

    def copy(self, model: Any) -> Any:
        """An independent deep copy of ``model``."""
        return copy.deepcopy(model)

    def inputs(self) -> dict[str, Any]:
        """A fixed batch (2 x 7 token ids) for the tiny models."""
        raise NotImplementedError

    def logits(self, model: Any, inputs: dict[str, Any]) -> np.ndarray:
        """The model's logits for ``inputs`` as float32 numpy, without gradients."""
        raise NotImplementedError

    def train_steps(self, model: Any, inputs: dict[str, Any], steps: int = 3, lr: float = 1e-2) -> None:
        """A few AdamW steps on the trainable parameters (loss: mean of the logits squared), then eval mode."""
        raise NotImplementedError

    def named_arrays(self, model: Any, trainable: bool | None = None) -> dict[str, np.ndarray]:
        """Parameters as numpy copies by name; only trainable (True) or frozen (False) ones when asked."""
        raise NotImplementedError


def _ids() -> np.ndarray:
    return np.random.default_rng(1).integers(3, VOCAB, size=(2, 7))


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

        ids = torch.from_numpy(_ids())
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

        return {"input_ids": paddle.to_tensor(_ids(), dtype="int64")}

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


DRIVERS: dict[str, Driver] = {"torch": TorchDriver(), "paddle": PaddleDriver()}


def get_driver(backend: str) -> Driver:
    """The driver of ``backend``; an error naming the known ones otherwise."""
    try:
        return DRIVERS[backend]
    except KeyError:
        raise KeyError(f"peftplug.testing has no driver for backend {backend!r}; known: {', '.join(DRIVERS)}") from None
