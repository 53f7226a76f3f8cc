"""A fixed batch of token ids, the logits and a few training steps (next-token loss) for the
tiny PaddleNLP causal LMs of the ``make_paddle_model`` fixture (conftest.py): what the LoRA and
IA3 tests on Paddle share."""

from __future__ import annotations

import numpy as np


def ids_batch(paddle, batch: int = 2, length: int = 7):
    """A fixed batch of token ids."""
    rng = np.random.default_rng(1)
    return paddle.to_tensor(rng.integers(3, 128, size=(batch, length)), dtype="int64")


def logits(paddle, model, ids) -> np.ndarray:
    """The model's logits as numpy, without gradients."""
    with paddle.no_grad():
        out = model(input_ids=ids)
    return (out[0] if isinstance(out, (tuple, list)) else out.logits).numpy()


def lm_loss(paddle, model, ids):
    """Next-token cross entropy, computed here (PaddleNLP models do not shift labels)."""
    out = model(input_ids=ids)
    scores = out[0] if isinstance(out, (tuple, list)) else out.logits
    return paddle.nn.functional.cross_entropy(scores[:, :-1].reshape([-1, scores.shape[-1]]), ids[:, 1:].reshape([-1]))


def train(paddle, model, ids, steps: int = 4, lr: float = 1e-2) -> list[float]:
    """A few AdamW steps on the trainable parameters; the losses seen."""
    model.train()
    optimizer = paddle.optimizer.AdamW(
        learning_rate=lr, parameters=[p for p in model.parameters() if not p.stop_gradient]
    )
    losses = []
    for _ in range(steps):
        loss = lm_loss(paddle, model, ids)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    model.eval()
    return losses


def token_rows(paddle):
    """Eight rows of eight token ids as a paddle Dataset of ``input_ids`` and ``labels``: what the
    tests give PaddleNLP's ``Trainer``."""

    class Rows(paddle.io.Dataset):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.rows = [rng.integers(3, 128, size=8).astype("int64") for _ in range(8)]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, index):
            return {"input_ids": self.rows[index], "labels": self.rows[index]}

    return Rows()
