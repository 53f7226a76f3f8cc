"""The plugin-author contract (:class:`peftplug.testing.MethodContract`) over every registered
method and every backend it claims: the five built-ins and the BitFit example are held to the
same tests a third-party method is. These run first in the suite (see ``conftest.py``).

A method registered without a case below fails :func:`test_every_registered_method_has_a_case`:
a new built-in is held to the contract from its first commit.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

from repo_root import ROOT

import peftplug
from peftplug.testing import MethodContract

BITFIT_SOURCE = ROOT / "examples" / "peftplug-bitfit"
BOTH = ("torch", "paddle")


@dataclass(frozen=True)
class Case:
    """One contract run: a method, the config it adapts the tiny Llama with, and what it claims."""

    method: str
    config: str
    fields: dict[str, Any] = field(default_factory=dict)
    backends: tuple[str, ...] = BOTH
    prompt: bool = False


CASES = {
    "lora": Case("lora", "LoraConfig", {"target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "lora-dora": Case("lora", "LoraConfig", {"target_modules": ["q_proj", "v_proj"], "use_dora": True}),
    "ia3": Case(
        "ia3", "IA3Config", {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
    ),
    "prompt_tuning": Case("prompt_tuning", "PromptTuningConfig", {"num_virtual_tokens": 4}, prompt=True),
    "p_tuning": Case(
        "p_tuning", "PromptEncoderConfig", {"num_virtual_tokens": 4, "encoder_hidden_size": 16}, prompt=True
    ),
    "prefix_tuning": Case("prefix_tuning", "PrefixTuningConfig", {"num_virtual_tokens": 4}, prompt=True),
    "bitfit": Case("bitfit", "peftplug_bitfit:BitFitConfig", {"target_modules": ["q_proj", "v_proj", "down_proj"]}),
}


def bitfit_plugin() -> Any:
    """The BitFit example plugin: the installed distribution when there is one, else its source."""
    if importlib.util.find_spec("peftplug_bitfit") is None:
        sys.path.insert(0, str(BITFIT_SOURCE))
    return importlib.import_module("peftplug_bitfit")


def config_class(case: Case) -> type:
    """The config class a case names: a public name of peftplug, or ``"module:Class"``."""
    module, _, name = case.config.rpartition(":")
    return getattr(importlib.import_module(module) if module else peftplug, name)


def contract_class(key: str, case: Case) -> type:
    """A ``MethodContract`` subclass for one case, named ``Test<Key>Contract``."""

    def make_config(self: MethodContract, backend: str) -> Any:
        return config_class(case)(task_type="CAUSAL_LM", **case.fields)

    name = "Test" + "".join(part.title() for part in key.replace("-", "_").split("_")) + "Contract"
    attributes = {
        "method": case.method,
        "backends": case.backends,
        "identity_at_init": not case.prompt,
        "mergeable": not case.prompt,
        "plugin": bitfit_plugin() if case.method == "bitfit" else None,
        "make_config": make_config,
        "__doc__": f"MethodContract for {key} on {', '.join(case.backends)}.",
    }
    return type(name, (MethodContract,), attributes)


for _key, _case in CASES.items():
    _cls = contract_class(_key, _case)
    globals()[_cls.__name__] = _cls


def test_every_registered_method_has_a_case():
    """Each method the plugin manager registers (built-ins and installed plugins) is covered."""
    from peftplug.manager import get_plugin_manager

    manager = get_plugin_manager()
    plugin = bitfit_plugin()
    if not manager.pm.is_registered(plugin):
        manager.register(plugin, name="peftplug_bitfit", distribution="<registered by the test>")
    registered = set(manager.methods.names())
    covered = {case.method for case in CASES.values()}
    assert registered <= covered, f"methods without a contract case: {sorted(registered - covered)}"
    assert covered <= registered, f"contract cases for unregistered methods: {sorted(covered - registered)}"
