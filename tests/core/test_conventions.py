"""Naming conventions are registered data: a third one, from a plugin, maps like the built-ins."""

from __future__ import annotations

import numpy as np
import pytest

import peftplug
from peftplug.errors import RegistryError
from peftplug.interop.convert import ConversionError, convert_state
from peftplug.interop.name_maps import (
    NameMapError,
    architecture_for,
    map_name,
    side_of,
    to_name,
    transposes,
    weight_layout,
)
from peftplug.manager import PluginManager
from peftplug.registration import Architecture, Convention, ModuleMap
from peftplug.state import AdapterState

TINY = Convention("tiny", "a made-up library", label="Tiny", library="tinylib", linear_weight="out_in")
TERNARY = Architecture(
    "ternary",
    ("ternary",),
    {"lora": ("proj",)},
    convention_model_types={"tiny": ("tiny_model",)},
    modules=(
        ModuleMap(
            {"hf": "model.layers.{n}.proj", "paddle": "net.layers.{n}.proj", "tiny": "blocks.{n}.linear"}, "linear"
        ),
        ModuleMap(
            {
                "hf": ("model.layers.{n}.q", "model.layers.{n}.k"),
                "paddle": ("net.layers.{n}.q", "net.layers.{n}.k"),
                "tiny": "blocks.{n}.qk",
            },
            "linear",
        ),
        ModuleMap({"hf": "model.head", "paddle": "net.head", "tiny": "out"}, params={"tiny": {"weight": "kernel"}}),
    ),
    convention_default_targets={"tiny": {"lora": ("linear",)}},
)


class TinyLibrary:
    """A third-party plugin: a naming convention and a family mapped in it."""

    @peftplug.hookimpl
    def peftplug_register_conventions(self):
        return TINY

    @peftplug.hookimpl
    def peftplug_register_architectures(self):
        return TERNARY


@pytest.fixture
def manager():
    manager = PluginManager(load_entry_points=False)
    manager.register(TinyLibrary(), "tiny-library")
    return manager


def test_the_builtin_conventions_and_backends_declare_theirs():
    manager = PluginManager(load_entry_points=False)
    assert manager.conventions.names() == ["hf", "paddle"]
    assert [c.name for c in manager.conventions if c.canonical] == ["hf"]
    assert (manager.conventions.get("hf").linear_weight, manager.conventions.get("paddle").linear_weight) == (
        "out_in",
        "in_out",
    )
    assert {b.name: b.convention for b in manager.backends} == {"torch": "hf", "paddle": "paddle"}


def test_a_third_convention_maps_to_and_from_every_other(manager):
    assert manager.conventions.owner("tiny") == "tiny-library"
    assert to_name("model.layers.3.proj.weight", TERNARY, "tiny", manager=manager) == "blocks.3.linear.weight"
    assert to_name("blocks.3.linear.lora_A.weight", TERNARY, "hf", manager=manager) == (
        "model.layers.3.proj.lora_A.weight"
    )
    assert to_name("net.layers.0.proj", TERNARY, "tiny", manager=manager) == "blocks.0.linear"
    assert to_name("blocks.0.linear", TERNARY, "paddle", manager=manager) == "net.layers.0.proj"
    # parameters renamed per convention
    assert to_name("model.head.weight", TERNARY, "tiny", manager=manager) == "out.kernel"
    assert to_name("out.kernel", TERNARY, "paddle", manager=manager) == "net.head.weight"
    # a module the tiny convention fuses
    match = map_name("model.layers.1.k.lora_B.weight", TERNARY, "tiny", manager=manager)
    assert (match.names, match.part, match.source) == (("blocks.1.qk.lora_B.weight",), (1, 2), "hf")
    assert map_name("blocks.1.qk", TERNARY, "paddle", manager=manager).names == ("net.layers.1.q", "net.layers.1.k")


def test_transposes_follow_each_conventions_linear_layout(manager):
    weight = "blocks.2.linear.weight"
    assert weight_layout(TERNARY.modules[0], "tiny", manager) == "out_in"
    assert not transposes(weight, TERNARY, "tiny", "hf", manager=manager)  # both [out, in]
    assert transposes(weight, TERNARY, "tiny", "paddle", manager=manager)  # Paddle's [in, out]
    assert not transposes("out.kernel", TERNARY, "tiny", "paddle", manager=manager)  # a "same" module


def test_a_third_convention_tells_its_names_and_model_types(manager):
    assert side_of(["blocks.0.qk.lora_A.weight", "out.kernel"], TERNARY, manager) == "tiny"
    assert architecture_for(model_type="tiny_model", manager=manager) is TERNARY
    assert architecture_for(names=["blocks.0.linear", "blocks.1.qk"], manager=manager) is TERNARY
    assert TERNARY.convention_default_targets["tiny"]["lora"] == ("linear",)


def test_an_adapter_converts_to_a_third_convention_and_back(manager):
    rng = np.random.RandomState(0)
    tensors = {
        f"base_model.model.model.layers.{n}.proj.lora_{ab}.weight": rng.randn(*shape).astype("float32")
        for n in range(2)
        for ab, shape in (("A", (2, 4)), ("B", (4, 2)))
    }
    state = AdapterState(peftplug.LoraConfig(r=2, lora_alpha=4, target_modules=["proj"]), tensors)
    tiny = convert_state(state, "tiny", architecture=TERNARY, manager=manager)
    assert sorted(tiny.tensors) == [f"base_model.model.blocks.{n}.linear.lora_{ab}.weight" for n in "01" for ab in "AB"]
    assert tiny.config.target_modules == ["linear"]
    back = convert_state(tiny, "hf", architecture=TERNARY, manager=manager)
    assert back.config.target_modules == ["proj"]
    assert all(np.array_equal(back.tensors[k], v) for k, v in tensors.items()) and back.tensors.keys() == tensors.keys()


def test_an_unknown_convention_is_a_clear_error(manager):
    llama = manager.architectures.get("llama")
    with pytest.raises(NameMapError, match=r"unknown convention 'jax'; known: hf, paddle, tiny"):
        to_name("model.layers.0.self_attn.q_proj", llama, "jax", manager=manager)
    with pytest.raises(
        NameMapError, match=r"architecture 'llama' maps no module in convention 'tiny'; it maps: hf, paddle"
    ):
        to_name("model.layers.0.self_attn.q_proj", llama, "tiny", manager=manager)
    state = AdapterState(peftplug.LoraConfig(r=2, target_modules=["proj"]), {})
    with pytest.raises(ConversionError, match=r"to='jax': unknown convention 'jax'"):
        convert_state(state, "jax", architecture=TERNARY, manager=manager)


def test_an_architecture_naming_an_unregistered_convention_is_refused():
    class JaxFamily:
        @peftplug.hookimpl
        def peftplug_register_architectures(self):
            return Architecture("jaxfam", ("jaxfam",), modules=(ModuleMap({"hf": "body", "jax": "params.body"}),))

    manager = PluginManager(load_entry_points=False)
    manager.register(JaxFamily(), "jax-family")
    with pytest.raises(
        RegistryError,
        match=r"architecture 'jaxfam' \(plugin 'jax-family'\) names convention 'jax', which no plugin registers; "
        r"registered conventions: hf, paddle",
    ):
        manager.architectures.names()


def test_a_format_naming_an_unregistered_convention_is_refused():
    from peftplug.registration import Format

    class JaxFormat(Format):
        name = "jaxfmt"
        convention = "jax"

    class JaxFormatPlugin:
        @peftplug.hookimpl
        def peftplug_register_formats(self):
            return JaxFormat()

    manager = PluginManager(load_entry_points=False)
    manager.register(JaxFormatPlugin(), "jax-format")
    with pytest.raises(
        RegistryError,
        match=r"format 'jaxfmt' \(plugin 'jax-format'\) names convention 'jax', which no plugin registers; "
        r"registered conventions: hf, paddle",
    ):
        manager.formats.names()


def test_a_second_canonical_convention_is_refused():
    class Rival:
        @peftplug.hookimpl
        def peftplug_register_conventions(self):
            return Convention("rival", canonical=True)

    manager = PluginManager(load_entry_points=False)
    manager.register(Rival(), "rival")
    with pytest.raises(RegistryError, match=r"several conventions claim to be canonical: 'hf' .*'rival'"):
        manager.conventions.names()
