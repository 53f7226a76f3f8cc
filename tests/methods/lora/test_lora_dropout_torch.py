"""LoRA's dropout on torch (``FastDropout``): each element of each adapted module's input is
dropped independently with probability p (to 2**-17), the rest scaled to keep the mean; the
gradient follows the same mask; modules reading one tensor draw their own masks; and
``PEFTPLUG_DROPOUT=torch`` gives torch's ``nn.Dropout`` (HF PEFT's masks)."""

from __future__ import annotations

import math

import pytest
from torch_lm import model_inputs

import peftplug

SIZE = (500, 800)  # 400,000 elements: a drop rate is known to about 1e-3 at p = 0.5


def five_sigma(p: float, count: int) -> float:
    return 5 * math.sqrt(p * (1 - p) / count)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drop_rate_mean_and_variance_are_those_of_independent_bernoulli_draws(torch, p):
    from peftplug.backends.torch.dropout import FastDropout

    torch.manual_seed(0)
    out = FastDropout(p).train()(torch.ones(SIZE))
    dropped = (out == 0).double()
    exact = round(p * 65536) / 65536
    assert abs(exact - p) <= 2**-17
    assert abs(dropped.mean().item() - exact) < five_sigma(exact, out.numel())
    kept = out[out != 0]
    assert torch.all(kept == kept[0]) and kept[0].item() == pytest.approx(1 / (1 - exact), rel=1e-6)
    assert abs(out.double().mean().item() - 1) < 5 * math.sqrt(exact / (1 - exact) / out.numel())
    assert out.double().var().item() == pytest.approx(exact / (1 - exact), rel=0.05)


@pytest.mark.parametrize("lag", [1, 2, 3, 4, 5, 8, SIZE[1]])
def test_elements_of_one_mask_are_uncorrelated(torch, lag):
    """Neighbours inside one 64-bit draw (lags 1-3), across draws (4, 5, 8) and across rows."""
    from peftplug.backends.torch.dropout import FastDropout

    torch.manual_seed(1)
    kept = (FastDropout(0.5).train()(torch.ones(SIZE)) != 0).double().flatten()
    first, second = kept[:-lag], kept[lag:]
    correlation = torch.corrcoef(torch.stack([first, second]))[0, 1].item()
    assert abs(correlation) < 5 / math.sqrt(first.numel())


def test_modules_reading_one_input_draw_their_own_masks(torch, make_model):
    model = peftplug.get_peft_model(
        make_model("llama"), peftplug.LoraConfig(lora_dropout=0.5, target_modules=["q_proj", "k_proj", "v_proj"])
    ).train()
    attention = model.base_model.model.model.layers[0].self_attn
    masks = {}

    def keep(name):
        def hook(module, args, out):
            masks[name] = out != 0

        return hook

    for name in ("q_proj", "k_proj", "v_proj"):
        getattr(attention, name).lora_dropout["default"].register_forward_hook(keep(name))
    model(**model_inputs(torch, "llama"))
    q, k, v = (masks[name].double().flatten() for name in ("q_proj", "k_proj", "v_proj"))
    for first, second in ((q, k), (q, v), (k, v)):
        assert not torch.equal(first, second)
        assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item()) < 5 / math.sqrt(first.numel())


def test_the_gradient_follows_the_forward_mask(torch):
    from peftplug.backends.torch.dropout import FastDropout

    torch.manual_seed(2)
    x = torch.randn(64, 96, requires_grad=True)
    weights = torch.randn(64, 96)
    out = FastDropout(0.3).train()(x)
    (out * weights).sum().backward()
    keep = out != 0
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(x.grad, weights * keep * scale)
    torch.testing.assert_close(out, x.detach() * keep * scale)


def test_eval_mode_and_seeds(torch):
    from peftplug.backends.torch.dropout import FastDropout

    x = torch.randn(32, 32)
    dropout = FastDropout(0.2)
    assert dropout.eval()(x) is x
    dropout.train()
    torch.manual_seed(3)
    first = dropout(x)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), first)


def test_the_environment_chooses_torchs_own_dropout(torch, make_model, monkeypatch):
    from torch import nn

    from peftplug.backends.torch.dropout import FastDropout

    def dropout_of(model):
        return model.base_model.model.model.layers[0].self_attn.q_proj.lora_dropout["default"]

    config = peftplug.LoraConfig(lora_dropout=0.1)
    assert type(dropout_of(peftplug.get_peft_model(make_model("llama"), config))) is FastDropout
    monkeypatch.setenv("PEFTPLUG_DROPOUT", "torch")
    assert type(dropout_of(peftplug.get_peft_model(make_model("llama"), config))) is nn.Dropout
    monkeypatch.setenv("PEFTPLUG_DROPOUT", "fastest")
    with pytest.raises(ValueError, match="PEFTPLUG_DROPOUT='fastest'"):
        peftplug.get_peft_model(make_model("llama"), config)
