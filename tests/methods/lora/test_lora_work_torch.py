"""The work of a LoRA Linear's training step, counted: the backward does the adapter's products and
nothing else, with gradients equal to HF PEFT's."""

from __future__ import annotations

import collections

import pytest

import peftplug

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

TOKENS, RANK, FEATURES = 10, 4, (32, 48, 24)


class ComputeCounter(TorchDispatchMode):
    """Calls that make a new storage or write one in place, and the bytes of the new storages."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()
        self.new_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        made = sum(
            t.untyped_storage().nbytes()
            for t in tree_leaves(out)
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs
        )
        alias = func._schema.returns[0].alias_info if func._schema.returns else None
        if made or (alias is not None and alias.is_write):
            self.calls[str(func.overloadpacket)] += 1
            self.new_bytes += made
        return out


def two_linears(bias: bool = False):
    """``Linear(32, 48) -> Linear(48, 24)`` with fixed random weights."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES[0], FEATURES[1], bias=bias), torch.nn.Linear(FEATURES[1], FEATURES[2], bias=bias)
    )


def wrapped(library, bias: bool = False, lora_bias: str = "none", dropout: float = 0.0):
    """LoRA r=4 on both Linears, B nonzero (the same in every call), training mode."""
    config = library.LoraConfig(r=RANK, lora_alpha=8, target_modules=["0", "1"], bias=lora_bias, lora_dropout=dropout)
    model = library.get_peft_model(two_linears(bias), config).train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


def test_backward_does_only_the_adapters_products():
    """Per adapter dh = s dy B, dB = s dyᵀ h, dA = dhᵀ x, and dh A added in place into the base's
    dx where the input needs a gradient (the second Linear's): no scaling passes over the
    gradients, no [tokens, in] sum of two input gradients."""
    model = wrapped(peftplug)
    x = torch.randn(TOKENS, FEATURES[0])
    out = model(x)
    grad = torch.randn_like(out)
    with ComputeCounter() as counter:
        out.backward(grad)
    per_module = [(FEATURES[0], FEATURES[1]), (FEATURES[1], FEATURES[2])]
    adapter_bytes = sum(4 * RANK * (TOKENS + features_in + features_out) for features_in, features_out in per_module)
    base_dx_bytes = 4 * TOKENS * FEATURES[1]  # dy W of the second Linear
    assert sum(counter.calls.values()) == 3 + 3 + 1 + 1, counter.calls
    assert counter.new_bytes == adapter_bytes + base_dx_bytes


@pytest.mark.parametrize("bias, lora_bias", [(False, "none"), (True, "all")], ids=["frozen-base", "trained-bias"])
def test_gradients_equal_hf_peft(bias, lora_bias):
    ours, theirs = wrapped(peftplug, bias, lora_bias), wrapped(peft, bias, lora_bias)
    x = torch.randn(2, TOKENS, FEATURES[0])
    for model in (ours, theirs):
        model(x).square().sum().backward()
    expected = {name: p.grad for name, p in theirs.named_parameters() if p.requires_grad}
    got = {name: p.grad for name, p in ours.named_parameters() if p.requires_grad}
    assert got.keys() == expected.keys() and any("bias" in name for name in got) == bias
    for name, gradient in expected.items():
        torch.testing.assert_close(got[name], gradient, rtol=1e-5, atol=1e-6, msg=name)


def test_input_gradient_equals_hf_peft():
    ours, theirs = wrapped(peftplug), wrapped(peft)
    gradients = []
    for model in (ours, theirs):
        x = torch.randn(TOKENS, FEATURES[0], generator=torch.Generator().manual_seed(2), requires_grad=True)
        model(x).square().sum().backward()
        gradients.append(x.grad)
    torch.testing.assert_close(*gradients, rtol=1e-5, atol=1e-6)


def test_backward_with_dropout_adds_no_scaling_passes():
    """With dropout the adapter's input gradient dh A goes back through the dropout's mask and is
    then added to the base's dx (the one [tokens, in] sum dropout needs); still no scaling passes."""
    model = wrapped(peftplug, dropout=0.5)
    out = model(torch.randn(TOKENS, FEATURES[0]))
    grad = torch.randn_like(out)
    with ComputeCounter() as counter:
        out.backward(grad)
    # first Linear: dh, dB, dA; second: dh, dB, dA, dh A, its mask, dy W, the sum
    assert sum(counter.calls.values()) == 3 + 7, counter.calls


def test_dropout_gradients_follow_the_drawn_mask():
    """The gradients of x, A and B equal autograd's through the same mask, written out."""
    torch.manual_seed(0)
    config = peftplug.LoraConfig(r=RANK, lora_alpha=8, target_modules=["0"], lora_dropout=0.5)
    model = peftplug.get_peft_model(torch.nn.Sequential(torch.nn.Linear(*FEATURES[:2])), config).train()
    layer = model.base_model.model[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        b.normal_()
    dropped = []
    layer.lora_dropout["default"].register_forward_hook(lambda module, args, output: dropped.append(output))
    x = torch.randn(TOKENS, FEATURES[0], generator=torch.Generator().manual_seed(3), requires_grad=True)
    model(x).square().sum().backward()
    mask = (dropped[0] / x).detach()
    assert 0 < (mask == 0).sum() < mask.numel()
    x_ref, a_ref, b_ref = (t.detach().clone().requires_grad_() for t in (x, a, b))
    out = layer.base_layer(x_ref) + layer.scaling["default"] * ((x_ref * mask) @ a_ref.t()) @ b_ref.t()
    expected = torch.autograd.grad(out.square().sum(), (x_ref, a_ref, b_ref))
    for got, want in zip((x.grad, a.grad, b.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
