"""Mixed batches on Paddle (``adapter_names=``): each row of one forward with its own adapter
equals that row run alone with that adapter active, for LoRA (ranks and scalings mixed), DoRA
beside LoRA, and IA3 scaling either side; bad names are refused as on torch."""

from __future__ import annotations

import numpy as np
import pytest
from paddle_lm import ids_batch

import peftplug

ROWS = ["a", "b", "__base__", "c", "a", "b"]


def lora(**kwargs):
    return peftplug.LoraConfig(init_lora_weights=False, target_modules=["q_proj", "v_proj", "down_proj"], **kwargs)


CASES = {
    "lora, three ranks": {"a": lora(r=4), "b": lora(r=8, lora_alpha=32), "c": lora(r=2, use_rslora=True)},
    "dora beside lora": {"a": lora(r=4, use_dora=True), "b": lora(r=8), "c": lora(r=2, use_dora=True)},
    "ia3, both sides": {
        name: peftplug.IA3Config(
            init_ia3_weights=False, target_modules=["k_proj", "down_proj"], feedforward_modules=feedforward
        )
        for name, feedforward in (("a", ["down_proj"]), ("b", []), ("c", ["down_proj"]))
    },
}


def with_adapters(make_paddle_model, configs: dict):
    names = list(configs)
    model = peftplug.get_peft_model(make_paddle_model("llama"), configs[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, configs[name])
    model.eval()
    return model


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
    model = with_adapters(make_paddle_model, CASES[case])
    ids = ids_batch(paddle, batch=len(ROWS))
    with paddle.no_grad():
        mixed = model(input_ids=ids, adapter_names=ROWS)[0].numpy()
    np.testing.assert_allclose(mixed, row_logits(paddle, model, ids, ROWS), atol=1e-5, rtol=1e-5)


def test_unknown_names_and_training_mode_are_refused(paddle, make_paddle_model):
    model = with_adapters(make_paddle_model, CASES["lora, three ranks"])
    ids = ids_batch(paddle, batch=len(ROWS))
    with pytest.raises(ValueError, match=r"non-existing adapter\(s\): zz"):
        model(input_ids=ids, adapter_names=["zz"] * len(ROWS))
    with pytest.raises(ValueError, match="should be the same as the number of inputs, but got 2 and 6"):
        model(input_ids=ids, adapter_names=["a", "b"])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(input_ids=ids, adapter_names=ROWS)
