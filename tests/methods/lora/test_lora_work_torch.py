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


def wrapped(library, bias: bool = False, lora_bias: str = "none"):
    """LoRA r=4 on both Linears, B nonzero (the same in every call), training mode."""
    config = library.LoraConfig(r=RANK, lora_alpha=8, target_modules=["0", "1"], bias=lora_bias)
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
