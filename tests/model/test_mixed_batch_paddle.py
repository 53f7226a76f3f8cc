"""Mixed batches on Paddle (``adapter_names=``): each row of one forward with its own adapter
equals that row run alone with that adapter active, for LoRA (ranks and scalings mixed), DoRA
beside LoRA, and IA3 scaling either side; bad names are refused as on torch."""

from __future__ import annotations

import numpy as np
import pytest
from mixed_batch_cases import CASES, ROWS, with_adapters
from paddle_lm import ids_batch


def row_logits(paddle, model, ids, names) -> np.ndarray:
    rows = []
    for row, name in enumerate(names):
        with paddle.no_grad():
            if name == "__base__":
                with model.disable_adapter():
                    rows.append(model(input_ids=ids[row : row + 1])[0].numpy())
            else:
                model.set_adapter(name)
                rows.append(model(input_ids=ids[row : row + 1])[0].numpy())
    return np.concatenate(rows)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_row_equals_its_adapter_run_alone(paddle, make_paddle_model, case):
    model = with_adapters(make_paddle_model("llama"), CASES[case])
    ids = ids_batch(paddle, batch=len(ROWS))
    with paddle.no_grad():
        mixed = model(input_ids=ids, adapter_names=ROWS)[0].numpy()
    np.testing.assert_allclose(mixed, row_logits(paddle, model, ids, ROWS), atol=1e-5, rtol=1e-5)


def test_unknown_names_and_training_mode_are_refused(paddle, make_paddle_model):
    model = with_adapters(make_paddle_model("llama"), CASES["lora, three ranks"])
    ids = ids_batch(paddle, batch=len(ROWS))
    with pytest.raises(ValueError, match=r"non-existing adapter\(s\): zz"):
        model(input_ids=ids, adapter_names=["zz"] * len(ROWS))
    with pytest.raises(ValueError, match="should be the same as the number of inputs, but got 2 and 6"):
        model(input_ids=ids, adapter_names=["a", "b"])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(input_ids=ids, adapter_names=ROWS)
