"""The plugin-author kit: ``peftplug.testing`` (opt-in pytest plugin, fixtures, contract tests)
and the README's "Writing a plugin" section, checked against ``peftplug/hookspecs.py``."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
import textwrap

import pytest
from repo_root import ROOT

from peftplug import hookspecs


def _hook_signatures() -> dict[str, str]:
    """``name(param: annotation, ...) -> return`` of every hook spec, as written in hookspecs.py."""
    signatures = {}
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("peftplug_") or not hasattr(function, "peftplug_spec"):
            continue
        signature = inspect.signature(function)
        params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
        signatures[name] = f"{name}({params}) -> {signature.return_annotation}"
    return signatures


def _writing_a_plugin_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Writing a plugin\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_every_hook_is_documented_with_its_exact_signature():
    signatures = _hook_signatures()
    assert len(signatures) >= 11, signatures
    section = _writing_a_plugin_section()
    documented = re.findall(r"^### `(peftplug_\w+)\((.*)`$", section, re.M)
    assert sorted(name for name, _ in documented) == sorted(signatures), "one subsection per hook, no more"
    for name, signature in signatures.items():
        assert f"\n### `{signature}`\n" in section, f"README: no subsection '### `{signature}`'"
        body = section.split(f"### `{signature}`", 1)[1].split("\n### ", 1)[0]
        assert "```python" in body and f"def {name}(" in body, f"README: {name} has no example"
    for needed in (
        "[project.entry-points.peftplug]",
        "PEFTPLUG_DISABLE_PLUGINS",
        "PEFTPLUG_LOAD_PLUGINS",
        "PEFTPLUG_BACKEND",
        "### The lifecycle of a `get_peft_model` call",
        "-p peftplug.testing",
    ):
        assert needed in section, needed


def test_the_kit_is_opt_in_and_imports_no_framework():
    """No pytest11 entry point loads it behind the user's back; importing it loads no framework."""
    pytest11 = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value.startswith("peftplug")]
    assert pytest11 == []
    code = "import sys, peftplug.testing; loaded = {'torch', 'paddle'} & set(sys.modules); assert not loaded, loaded"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


BROKEN_METHOD = '''
"""A method whose merge forgets to fold the adapter in: the contract's merge test must fail."""
import dataclasses
from typing import ClassVar, Optional, Union

import numpy as np
import pytest
import torch
from torch import nn

import peftplug
from peftplug.backends.torch.layer import TorchAdapterLayer, copy_into, to_numpy
from peftplug.config import AdapterConfig
from peftplug.registration import Method
from peftplug.testing import MethodContract


@dataclasses.dataclass
class ScaleConfig(AdapterConfig):
    peft_type: ClassVar[str] = "KIT_SCALE"
    target_modules: Union[list[str], str] = "all-linear"


class ScaleLinear(TorchAdapterLayer):
    adapter_layer_names = ("scale",)

    def __init__(self, base_layer):
        super().__init__()
        self.base_layer = base_layer
        self.scale = nn.ParameterDict()

    def forward(self, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)
        for name in self._active_unmerged():
            result = result * (1 + self.scale[name])
        return result

    def merge(self, names):
        self.merged_adapters.extend(n for n in names if n not in self.merged_adapters)  # BUG: W unchanged

    def unmerge(self):
        self.merged_adapters.clear()

    def export_adapter(self, name):
        return {"scale": to_numpy(self.scale[name])}

    def import_adapter(self, name, tensors, key_prefix):
        if "scale" not in tensors:
            return set()
        copy_into(self.scale[name], tensors["scale"], key_prefix + "scale")
        return {"scale"}


class ScalePlugin:
    @peftplug.hookimpl
    def peftplug_register_methods(self):
        return Method(name="kit_scale", config_class=ScaleConfig)

    @peftplug.hookimpl
    def peftplug_wrap_layer(self, method, backend, layer, name, config, adapter_name):
        if method != "kit_scale" or backend != "torch" or not isinstance(layer, (nn.Linear, ScaleLinear)):
            return None
        wrapped = layer if isinstance(layer, ScaleLinear) else ScaleLinear(layer)
        wrapped.scale[adapter_name] = nn.Parameter(torch.zeros(layer.weight.shape[0]))
        return wrapped


class TestScaleContract(MethodContract):
    method = "kit_scale"
    backends = ("torch",)
    plugin = ScalePlugin()

    def make_config(self, backend):
        return ScaleConfig(target_modules=["q_proj", "v_proj"])


def test_fixtures(tiny_torch_model, peftplug_manager):
    assert type(tiny_torch_model).__name__ == "LlamaForCausalLM"
    assert tiny_torch_model.config.hidden_size == 32 and not tiny_torch_model.training
    assert "lora" in peftplug_manager.methods.names()
'''


def test_contract_tests_catch_a_broken_merge(tmp_path, torch):
    """The contract run on a method whose merge is wrong: only the merge test fails, naming it."""
    pytest.importorskip("transformers")
    (tmp_path / "test_scale.py").write_text(textwrap.dedent(BROKEN_METHOD))
    runner = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", runner, "-q", "-p", "no:cacheprovider", "-p", "peftplug.testing", "-rfs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PEFTPLUG_LOAD_PLUGINS": ""},
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "FAILED test_scale.py::TestScaleContract::test_merge[torch]" in out, out
    assert "kit_scale: the merged model gives other logits" in out, out
    assert re.search(r"\b1 failed, 5 passed\b", out), out


class FakeDriver:
    """A driver a third backend declares (it needs no framework to be found)."""

    name = "fake"


def test_a_backend_declares_its_driver(peftplug_manager):
    """MethodContract reaches a backend through the driver on its registration: a third backend
    brings its own, with no edit to peftplug.testing."""
    from peftplug import hookimpl
    from peftplug.registration import Backend
    from peftplug.testing import get_driver

    class FakeBackendPlugin:
        @hookimpl
        def peftplug_register_backends(self):
            return Backend(name="fake", implementation="fake:Ops", test_driver="test_plugin_kit:FakeDriver")

    peftplug_manager.register(FakeBackendPlugin(), name="fake-backend")
    get_driver.cache_clear()
    assert type(get_driver("fake")).__name__ == "FakeDriver"
    assert type(get_driver("torch")).__module__ == "peftplug.backends.torch.testing"
    with pytest.raises(KeyError, match=r"no driver for backend 'nothing'.*torch"):
        get_driver("nothing")
    get_driver.cache_clear()
