"""``import peftplug`` must not import a framework, nor a plugin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_import_peftplug_loads_neither_torch_nor_paddle():
    code = (
        "import sys, peftplug; pm = peftplug.get_plugin_manager(); "
        "assert pm.backends.names() and pm.methods.names() and pm.formats.names(); "
        "loaded = {'torch', 'paddle'} & set(sys.modules); assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_peftplug_loads_no_plugin():
    """The built-in configs are imported on first access (``from peftplug import LoraConfig``),
    not by ``import peftplug``; the manager imports the plugins when it is first asked for."""
    code = (
        "import sys, peftplug; "
        "loaded = [m for m in sys.modules if m.startswith(('peftplug.plugins', 'peftplug.backends'))]; "
        "assert not loaded, loaded; "
        "from peftplug import LoraConfig, PromptTuningInit; "
        "assert LoraConfig.peft_type == 'LORA' and PromptTuningInit.TEXT == 'TEXT'; "
        "assert not {'torch', 'paddle'} & set(sys.modules); "
        "assert all(hasattr(peftplug, name) for name in peftplug.__all__); "
        "assert set(peftplug.__all__) <= set(dir(peftplug))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_torch_model_never_imports_paddle():
    """Detecting, wrapping and saving a torch model leaves paddle unimported (and the reverse)."""
    pytest.importorskip("torch")
    code = (
        "import sys, tempfile, torch, peftplug; "
        "m = peftplug.get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), "
        "peftplug.LoraConfig(r=2, target_modules=['0'])); m.save_pretrained(tempfile.mkdtemp()); "
        "assert 'paddle' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_paddle_model_never_imports_torch():
    """The Paddle backend, LoRA layers and the peft format need no torch."""
    pytest.importorskip("paddle")
    code = (
        "import sys, tempfile, paddle, peftplug; "
        "m = peftplug.get_peft_model(paddle.nn.Sequential(paddle.nn.Linear(4, 4)), "
        "peftplug.LoraConfig(r=2, target_modules=['0'])); m.save_pretrained(tempfile.mkdtemp()); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MKL_DEBUG_CPU_TYPE": "5"})
