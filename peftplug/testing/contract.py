"""The contract test class a third-party method subclasses.

.. code-block:: python

    from peftplug.testing import MethodContract
    from peftplug_mymethod import MyConfig

    class TestMyMethod(MethodContract):
        method = "mymethod"                 # the name the plugin registers
        backends = ("torch", "paddle")      # every backend the plugin claims

        def make_config(self, backend):
            return MyConfig(target_modules=["q_proj", "v_proj"])

Each test runs once per backend in ``backends`` (skipped where the framework is not installed):
the method is registered, injection leaves only new parameters trainable, a training step
changes the output and no base weight, a save / load round trip gives the same logits on a
fresh base, and merging gives the unmerged logits with no adapter layer left. The fixtures come
from the pytest plugin :mod:`peftplug.testing` (``pytest -p peftplug.testing``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

import peftplug


class MethodContract:
    """Subclass it (name the subclass ``Test...``) and set the class attributes below."""

    method: ClassVar[str] = ""
    """The method name the plugin registers (``peftplug_register_methods``)."""
    backends: ClassVar[tuple[str, ...]] = ("torch",)
    """Every backend the plugin claims to support; each test runs on each."""
    plugin: ClassVar[Any] = None
    """A plugin module or object to register on the fresh manager; None when the plugin is
    installed (found through its entry point)."""
    family: ClassVar[str] = "llama"
    """The tiny model family the tests adapt (``llama`` on every backend)."""
    identity_at_init: ClassVar[bool] = True
    """True when a fresh adapter leaves the model's output unchanged (LoRA, IA3, BitFit)."""
    mergeable: ClassVar[bool] = True
    """False for methods with nothing to merge (prompt learning): the merge test is skipped."""
    atol: ClassVar[float] = 1e-5
    """Tolerance of the logits comparisons that involve merging."""

    def make_config(self, backend: str) -> peftplug.AdapterConfig:
        """The config the tests adapt the tiny model with, on ``backend``."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_config(backend)")

    def pytest_generate_tests(self, metafunc: Any) -> None:
        """Run every test once per claimed backend."""
        if "peftplug_backend" in metafunc.fixturenames:
            metafunc.parametrize("peftplug_backend", list(self.backends), indirect=True)

    # ------------------------------------------------------------------ helpers
    def _adapt(self, driver: Any) -> Any:
        return peftplug.get_peft_model(driver.tiny_model(self.family), self.make_config(driver.name))

    # ------------------------------------------------------------------ the contract
    def test_method_is_registered(self, peftplug_manager: Any, peftplug_backend: Any) -> None:
        """The method is in the registry, and its config class is what make_config returns."""
        assert self.method, f"{type(self).__name__}.method is not set"
        method = peftplug_manager.methods.get(self.method)
        config = self.make_config(peftplug_backend.name)
        assert type(config) is method.config_class, (
            f"make_config returned {type(config).__name__}, but method {self.method!r} is configured by "
            f"{method.config_class.__name__}"
        )
        assert peftplug.config_from_dict(config.to_dict()) == config, "the config does not round-trip through its dict"

    def test_inject(self, peftplug_manager: Any, peftplug_backend: Any) -> None:
        """Only new parameters train; every base parameter is frozen; a fresh adapter is an
        identity when ``identity_at_init``."""
        driver = peftplug_backend
        base_names = set(driver.named_arrays(driver.tiny_model(self.family)))
        inputs = driver.inputs()
        before = driver.logits(driver.tiny_model(self.family), inputs)
        model = self._adapt(driver)
        trainable = driver.named_arrays(model, trainable=True)
        assert trainable, f"{self.method}: no trainable parameter after get_peft_model"
        for name in trainable:
            plain = name.replace(".base_layer", "").removeprefix("base_model.model.")
            assert plain not in base_names, f"{self.method}: base parameter {plain!r} is trainable"
        counted, total = model.get_nb_trainable_parameters()
        assert counted == sum(a.size for a in trainable.values()) and total > counted
        if self.identity_at_init:
            np.testing.assert_allclose(
                driver.logits(model, inputs),
                before,
                rtol=0,
                atol=1e-6,
                err_msg=f"{self.method}: a fresh adapter changes the output",
            )

    def test_train_step(self, peftplug_manager: Any, peftplug_backend: Any) -> None:
        """Training changes the output and leaves every frozen weight as it was."""
        driver = peftplug_backend
        inputs = driver.inputs()
        model = self._adapt(driver)
        frozen = driver.named_arrays(model, trainable=False)
        before = driver.logits(model, inputs)
        driver.train_steps(model, inputs)
        after = driver.logits(model, inputs)
        assert np.abs(after - before).max() > 1e-4, f"{self.method}: training did not change the output"
        for name, array in driver.named_arrays(model, trainable=False).items():
            np.testing.assert_array_equal(array, frozen[name], err_msg=f"{self.method}: frozen {name} changed")

    def test_save_load_round_trip(self, peftplug_manager: Any, peftplug_backend: Any, tmp_path: Any) -> None:
        """A trained adapter saved and loaded onto a fresh base gives the same logits."""
        driver = peftplug_backend
        inputs = driver.inputs()
        model = self._adapt(driver)
        driver.train_steps(model, inputs)
        trained = driver.logits(model, inputs)
        model.save_pretrained(tmp_path)
        config = peftplug.AdapterConfig.from_pretrained(tmp_path)
        assert type(config) is type(self.make_config(driver.name))
        loaded = peftplug.PeftModel.from_pretrained(driver.tiny_model(self.family), tmp_path)
        np.testing.assert_allclose(
            driver.logits(loaded, inputs),
            trained,
            rtol=0,
            atol=1e-6,
            err_msg=f"{self.method}: the reloaded adapter gives other logits",
        )
        assert loaded.get_nb_trainable_parameters()[0] == 0, "a loaded adapter is frozen unless is_trainable=True"

    def test_merge(self, peftplug_manager: Any, peftplug_backend: Any) -> None:
        """merge_and_unload gives the unmerged logits and a model without adapter layers."""
        if not self.mergeable:
            pytest.skip(f"{self.method} declares mergeable = False")
        driver = peftplug_backend
        inputs = driver.inputs()
        model = self._adapt(driver)
        driver.train_steps(model, inputs)
        trained = driver.logits(model, inputs)
        ops = peftplug_manager.backends.get(driver.name).load()
        merged = model.merge_and_unload()
        left = [name for name, module in ops.named_modules(merged) if ops.is_adapter_layer(module)]
        assert not left, f"{self.method}: adapter layers left after merge_and_unload: {left[:3]}"
        np.testing.assert_allclose(
            driver.logits(merged, inputs),
            trained,
            rtol=0,
            atol=self.atol,
            err_msg=f"{self.method}: the merged model gives other logits",
        )
