"""peftplug's kit for plugin authors: an opt-in pytest plugin and a contract test class.

Turn it on in your plugin's test run (it is not loaded unless asked for)::

    pytest -p peftplug.testing                # or, in pyproject.toml:
    [tool.pytest.ini_options]
    addopts = "-p peftplug.testing"

Fixtures:

- ``peftplug_manager``: a fresh plugin manager (built-ins and installed entry points, read
  with the current environment), dropped again after the test;
- ``tiny_torch_model`` / ``tiny_paddle_model``: a tiny random Llama of transformers /
  PaddleNLP (hidden 32, 2 layers, vocabulary 128, untied embeddings), skipped when the
  framework is not installed;
- ``peftplug_backend``: the :class:`~peftplug.testing.drivers.Driver` of one backend (torch
  unless parametrized; :class:`MethodContract` parametrizes it over its ``backends``).

:class:`MethodContract` is the base class that gives a method inject / train step / save-load
round trip / merge tests on every backend it claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from peftplug.testing.contract import MethodContract
from peftplug.testing.drivers import Driver, get_driver

__all__ = ["Driver", "MethodContract", "get_driver"]


def _driver_or_skip(backend: str) -> Driver:
    driver = get_driver(backend)
    reason = driver.missing()
    if reason:
        pytest.skip(reason)
    return driver


@pytest.fixture
def peftplug_manager(request: Any) -> Iterator[Any]:
    """A fresh process-wide plugin manager for this test; a test class's ``plugin`` attribute
    (a module or object with hook implementations) is registered on it when not loaded yet."""
    from peftplug.manager import get_plugin_manager, reset_plugin_manager

    reset_plugin_manager()
    manager = get_plugin_manager()
    plugin = getattr(request.cls, "plugin", None) if request.cls is not None else None
    if plugin is not None and not manager.pm.is_registered(plugin):
        manager.register(plugin, name=getattr(plugin, "__name__", None), distribution="<registered by the test>")
    yield manager
    reset_plugin_manager()


@pytest.fixture
def peftplug_backend(request: Any) -> Driver:
    """The test driver of a backend: ``request.param`` when parametrized (indirectly), else torch."""
    return _driver_or_skip(getattr(request, "param", "torch"))


@pytest.fixture
def tiny_torch_model() -> Any:
    """A tiny random transformers ``LlamaForCausalLM`` (same weights each time), in eval mode."""
    return _driver_or_skip("torch").tiny_model("llama")


@pytest.fixture
def tiny_paddle_model() -> Any:
    """A tiny random PaddleNLP ``LlamaForCausalLM`` (same weights each time), in eval mode."""
    return _driver_or_skip("paddle").tiny_model("llama")
