"""``add_weighted_adapter`` and the PiSSA / OLoRA initialisations on Paddle, against HF PEFT on torch
with the same weights: a Paddle twin of the custom MLP carries the torch model's base weights and
loads HF PEFT's adapters. ``linear`` and ``cat`` give HF PEFT's tensors, ``svd`` its update ``B A``
(Paddle's SVD may flip a singular vector's sign) and outputs; ``pissa`` and ``olora`` give HF
PEFT's ``B A`` and residual base weight, ``pissa_niter_N`` its reconstruction property."""

from __future__ import annotations

import warnings

import custom_models
import numpy as np
import pytest
from custom_models import paddle_mlp

import peftplug

peft = pytest.importorskip("peft")
TOLERANCE = 1e-5


def outputs(paddle, torch, hf, ours):
    """(HF PEFT's, peftplug's) outputs on the MLP's fixed inputs, as numpy."""
    x = custom_models.inputs(torch, "mlp")
    with torch.no_grad():
        theirs = hf(x).numpy()
    return theirs, ours(paddle.to_tensor(x.numpy())).numpy()


@pytest.fixture
def two_adapters(paddle, torch, tmp_path):
    """HF PEFT's model with two trained-looking adapters, and peftplug's Paddle twin holding them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(
            custom_models.build(torch, "mlp"), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["lin0", "lin1"])
        )
        hf.add_adapter("other", peft.LoraConfig(r=2, lora_alpha=8, target_modules=["lin0", "lin1"]))
    custom_models.randomise(torch, hf)
    hf.set_adapter("other")
    custom_models.randomise(torch, hf, seed=3)
    hf.set_adapter("default")
    hf.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(paddle_mlp(paddle, torch), tmp_path)
    ours.load_adapter(tmp_path / "other", "other")
    return hf, ours


@pytest.mark.parametrize("combination", ["linear", "cat", "svd"])
def test_add_weighted_adapter_gives_hf_peft_results(paddle, torch, two_adapters, combination):
    hf, ours = two_adapters
    name = f"w_{combination}"
    for model in (hf, ours):
        model.add_weighted_adapter(["default", "other"], [0.7, -1.3], name, combination_type=combination)
        model.set_adapter(name)
    theirs, mine = outputs(paddle, torch, hf, ours)
    assert np.abs(mine - theirs).max() <= TOLERANCE
    saved = ours.adapter_state(name).tensors
    expected = {key: value.numpy() for key, value in peft.get_peft_model_state_dict(hf, adapter_name=name).items()}
    assert saved.keys() == expected.keys()
    for module in ("lin0", "lin1"):
        a, b = (f"base_model.model.{module}.lora_{part}.weight" for part in "AB")
        assert np.abs(saved[b] @ saved[a] - expected[b] @ expected[a]).max() <= TOLERANCE
        if combination != "svd":
            assert np.abs(saved[a] - expected[a]).max() <= TOLERANCE
            assert np.abs(saved[b] - expected[b]).max() <= TOLERANCE


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_give_hf_peft_update_and_residual(paddle, torch, init):
    torch.manual_seed(0)
    hf = peft.get_peft_model(
        custom_models.build(torch, "mlp"),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=["lin0"], init_lora_weights=init),
    )
    ours = peftplug.get_peft_model(
        paddle_mlp(paddle, torch),
        peftplug.LoraConfig(r=2, lora_alpha=4, target_modules=["lin0"], init_lora_weights=init),
    )
    layer, theirs = ours.base_model.model.lin0, hf.base_model.model.lin0
    a, b = layer.lora_A["default"].numpy().T, layer.lora_B["default"].numpy().T  # HF PEFT's layout
    hf_a, hf_b = (theirs.lora_A["default"].weight.detach().numpy(), theirs.lora_B["default"].weight.detach().numpy())
    assert np.abs(b @ a - hf_b @ hf_a).max() <= TOLERANCE
    assert np.abs(layer.base_layer.weight.numpy().T - theirs.base_layer.weight.detach().numpy()).max() <= TOLERANCE
    hf_output, output = outputs(paddle, torch, hf, ours)
    assert np.abs(output - hf_output).max() <= TOLERANCE


def test_pissa_niter_keeps_the_weight(paddle, torch):
    original = paddle_mlp(paddle, torch).lin0.weight.numpy()
    model = peftplug.get_peft_model(
        paddle_mlp(paddle, torch),
        peftplug.LoraConfig(r=2, lora_alpha=4, target_modules=["lin0"], init_lora_weights="pissa_niter_4"),
    )
    layer = model.base_model.model.lin0
    low_rank = layer.scaling["default"] * layer.lora_A["default"].numpy() @ layer.lora_B["default"].numpy()
    assert np.abs(layer.base_layer.weight.numpy() + low_rank - original).max() <= TOLERANCE
    top = np.linalg.svd(original, compute_uv=False)[:2]
    assert np.allclose(np.linalg.svd(low_rank, compute_uv=False)[:2], top, rtol=1e-2)  # randomised: within 1%


def test_pissa_on_a_conv2d_is_an_error_naming_the_field(paddle):
    from peftplug.errors import ConfigError

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ConfigError, match="init_lora_weights.*conv"):
        peftplug.get_peft_model(Net(), peftplug.LoraConfig(target_modules=["conv"], init_lora_weights="olora"))
