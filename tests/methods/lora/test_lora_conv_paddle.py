"""LoRA on ``paddle.nn.Conv2D``: a Conv2d adapter trained by HF PEFT gives its outputs on a Paddle
twin of the network, one trained on Paddle gives Paddle's outputs in HF PEFT, and merging is exact."""

from __future__ import annotations

import numpy as np
import pytest
from torch_cnn import TARGETS, config, images, tiny_cnn, train

import peftplug
from peftplug.errors import PeftplugError

peft = pytest.importorskip("peft")
TOLERANCE = 1e-5


def paddle_twin(paddle, source):
    """``tiny_cnn``'s network in Paddle, carrying ``source``'s (a torch ``TinyCNN``'s) weights."""
    nn = paddle.nn

    class TinyCNN(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2D(3, 8, 3, padding=1)
            self.mix = nn.Conv2D(8, 8, 1)
            self.down = nn.Conv2D(8, 6, 3, stride=2, padding=1, bias_attr=False)
            self.grouped = nn.Conv2D(6, 6, 3, padding=1, groups=2)
            self.head = nn.Linear(6, 5)

        def forward(self, x):
            x = nn.functional.relu(self.stem(x))
            x = nn.functional.relu(self.mix(x))
            x = self.grouped(nn.functional.relu(self.down(x)))
            return self.head(x.mean(axis=(2, 3)))

    model = TinyCNN()
    for name, parameter in model.named_parameters():
        value = source.state_dict()[name].detach().numpy()
        parameter.set_value(value.T if name == "head.weight" else value)
    model.eval()
    return model


def paddle_outputs(paddle, torch, model) -> np.ndarray:
    with paddle.no_grad():
        return model(paddle.to_tensor(images(torch).numpy())).numpy()


def torch_outputs(torch, model) -> np.ndarray:
    with torch.no_grad():
        return model(images(torch)).numpy()


def test_a_peft_conv_adapter_gives_its_outputs_on_paddle(torch, paddle, tmp_path):
    base = tiny_cnn(torch)
    twin = paddle_twin(paddle, base)
    assert np.abs(paddle_outputs(paddle, torch, twin) - torch_outputs(torch, base)).max() <= TOLERANCE
    theirs = peft.get_peft_model(base, config(peft))
    train(torch, theirs)
    theirs.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(twin, tmp_path)
    assert np.abs(paddle_outputs(paddle, torch, ours) - torch_outputs(torch, theirs)).max() <= TOLERANCE


def test_a_paddle_conv_adapter_gives_its_outputs_in_peft_and_merges_exactly(torch, paddle, tmp_path):
    ours = peftplug.get_peft_model(paddle_twin(paddle, tiny_cnn(torch)), config(peftplug))
    ours.train()
    optimizer = paddle.optimizer.AdamW(
        learning_rate=5e-2, parameters=[p for p in ours.parameters() if not p.stop_gradient]
    )
    for _ in range(3):
        ours(paddle.to_tensor(images(torch).numpy())).pow(2).mean().backward()
        optimizer.step()
        optimizer.clear_grad()
    ours.eval()
    expected = paddle_outputs(paddle, torch, ours)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(tiny_cnn(torch), tmp_path)
    assert np.abs(torch_outputs(torch, theirs) - expected).max() <= TOLERANCE
    assert sorted(n for n, _ in theirs.named_parameters() if "lora_A" in n) == [
        f"base_model.model.{m}.lora_A.default.weight" for m in sorted(TARGETS)
    ]

    ours.merge_adapter()
    assert np.abs(paddle_outputs(paddle, torch, ours) - expected).max() <= TOLERANCE
    ours.unmerge_adapter()
    assert np.abs(paddle_outputs(paddle, torch, ours) - expected).max() <= TOLERANCE
    merged = ours.merge_and_unload()
    assert type(merged.stem) is paddle.nn.Conv2D
    assert np.abs(paddle_outputs(paddle, torch, merged) - expected).max() <= TOLERANCE


def test_a_grouped_conv2d_is_refused_naming_it(torch, paddle):
    with pytest.raises(PeftplugError, match=r"LoRA on grouped \(Conv2D, groups=2"):
        peftplug.get_peft_model(
            paddle_twin(paddle, tiny_cnn(torch)), peftplug.LoraConfig(r=4, target_modules=["grouped"])
        )
