"""A fixed batch, the logits and a few training steps for the tiny torch models of the
``make_model`` fixture (conftest.py): what the method, trainer, error and plugin tests share."""

from __future__ import annotations


def model_inputs(torch, family: str) -> dict:
    """A fixed small batch for ``family``'s forward."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 128, (2, 7), generator=generator)
    if family == "t5":
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits_of(torch, model, inputs):
    """The model's logits for ``inputs``, without gradients."""
    with torch.no_grad():
        return model(**inputs).logits


def train_steps(torch, model, inputs, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps on the model's trainable parameters (loss: mean of logits squared,
    so every family trains the same way without labels): the torch driver's."""
    from peftplug.testing import get_driver

    get_driver("torch").train_steps(model, inputs, steps, lr)
