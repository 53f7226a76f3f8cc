"""The plugin manager and its registries."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import ClassVar

import pytest
from repo_root import ROOT

import peftplug
from peftplug.config import AdapterConfig
from peftplug.discovery import builtin_plugins
from peftplug.errors import BackendError, PluginError, RegistryError
from peftplug.manager import PluginManager
from peftplug.registration import Backend, Method


@dataclasses.dataclass
class TagConfig(AdapterConfig):
    """The config of "tag", a layer method that exists only in these tests."""

    peft_type: ClassVar[str] = "TAG"


@dataclasses.dataclass
class TagPromptConfig(AdapterConfig):
    """The config of "tag_prompt", a prompt method that exists only in these tests."""

    peft_type: ClassVar[str] = "TAG_PROMPT"


def declared_layer(layer, name, config, adapter_name):
    """The layer factory "tag" declares for torch: the layer, tagged."""
    return ("declared", layer)


def declared_encoder(config, model):
    """The prompt-encoder factory "tag_prompt" declares for torch: the model, tagged."""
    return ("declared encoder", model)


class TagMethods:
    """Registers "tag" and "tag_prompt", whose torch layers and encoders are declared only."""

    @peftplug.hookimpl
    def peftplug_register_methods(self):
        return [
            Method(name="tag", config_class=TagConfig, layers={"torch": f"{__name__}:declared_layer"}),
            Method(
                name="tag_prompt",
                config_class=TagPromptConfig,
                kind="prompt",
                prompt_encoders={"torch": f"{__name__}:declared_encoder"},
            ),
        ]


class Impostor:
    """Registers a second method called 'lora'."""

    @peftplug.hookimpl
    def peftplug_register_methods(self):
        return Method(name="lora", config_class=peftplug.LoraConfig)


def test_builtins_are_registered_with_their_owner():
    manager = PluginManager(load_entry_points=False)
    assert "torch" in manager.backends and "lora" in manager.methods and "peft" in manager.formats
    owner = manager.methods.owner("lora")
    assert owner == "peftplug.plugins.lora" and manager.distribution_of(owner) == "peftplug"


def test_duplicate_names_are_an_error_naming_both_owners():
    manager = PluginManager(load_entry_points=False)
    manager.register(Impostor(), "impostor")
    with pytest.raises(
        RegistryError, match=r"'lora' is registered twice: by plugin 'peftplug.plugins.lora' and by plugin 'impostor'"
    ):
        _ = manager.methods


def test_unknown_names_list_the_known_ones():
    manager = PluginManager(load_entry_points=False)
    with pytest.raises(
        RegistryError,
        match=r"unknown method 'lorra'; known: ia3, lora, p_tuning, prefix_tuning, prompt_tuning\. Did you mean 'lora'\?",
    ):
        manager.methods.get("lorra")
    with pytest.raises(RegistryError, match="unknown format 'safetensor'; known: paddlenlp, peft"):
        manager.formats.get("safetensor")


def test_an_invalid_registration_names_the_plugin():
    class BadBackend:
        @peftplug.hookimpl
        def peftplug_register_backends(self):
            return Backend(name="jax", implementation="peftplug_jax.ops")

    manager = PluginManager(load_entry_points=False)
    manager.register(BadBackend(), "bad-backend")
    with pytest.raises(PluginError, match="plugin 'bad-backend' registered an invalid backend.*'module:attribute'"):
        _ = manager.backends


def test_a_misspelt_hook_is_refused():
    class Misspelt:
        @peftplug.hookimpl
        def peftplug_register_method(self):
            return None

    manager = PluginManager(load_entry_points=False)
    with pytest.raises(PluginError, match="peftplug_register_method"):
        manager.register(Misspelt(), "misspelt")


def test_disable_env_leaves_out_a_builtin(monkeypatch):
    monkeypatch.setenv("PEFTPLUG_DISABLE_PLUGINS", "lora")
    manager = PluginManager(load_entry_points=False)
    assert "lora" not in manager.methods and "torch" in manager.backends


def test_load_env_selects_entry_points(monkeypatch):
    monkeypatch.setenv("PEFTPLUG_LOAD_PLUGINS", "")
    manager = PluginManager()
    assert all(dist == "peftplug" for dist in manager.distributions.values())


def test_a_later_plugin_takes_over_wrap_layer(make_model):
    from torch import nn

    calls = []

    class Override:
        @peftplug.hookimpl
        def peftplug_wrap_layer(self, method, backend, layer, name, config, adapter_name):
            calls.append(name)
            return None  # declines: the built-in LoRA still answers

    peftplug.get_plugin_manager().register(Override(), "override")
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=["q_proj"]))
    assert calls == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    assert not isinstance(model.base_model.model.model.layers[0].self_attn.q_proj, nn.Linear)


def test_a_method_registered_in_code_works_end_to_end(torch, make_model):
    """A minimal method registered at run time (no entry point): scales outputs of targets."""
    from torch import nn

    from peftplug.backends.torch.layer import TorchAdapterLayer

    @dataclasses.dataclass
    class ScaleConfig(AdapterConfig):
        peft_type: ClassVar[str] = "SCALE"
        target_modules: list[str] = dataclasses.field(default_factory=list)

    class ScaleLayer(TorchAdapterLayer):
        adapter_layer_names = ("scale",)

        def __init__(self, base):
            super().__init__()
            self.base_layer = base
            self.scale = nn.ParameterDict()

        def forward(self, x):
            out = self.base_layer(x)
            for name in self._active_unmerged():
                out = out * self.scale[name]
            return out

    class ScalePlugin:
        @peftplug.hookimpl
        def peftplug_register_methods(self):
            return Method(name="scale", config_class=ScaleConfig)

        @peftplug.hookimpl
        def peftplug_wrap_layer(self, method, backend, layer, name, config, adapter_name):
            if method == "scale" and backend == "torch":
                wrapped = layer if isinstance(layer, ScaleLayer) else ScaleLayer(layer)
                wrapped.scale[adapter_name] = nn.Parameter(torch.full((layer.out_features,), 2.0))
                return wrapped
            return None

    peftplug.get_plugin_manager().register(ScalePlugin(), "scale-plugin")
    model = peftplug.get_peft_model(make_model("llama"), ScaleConfig(target_modules=["lm_head"]))
    assert model.get_nb_trainable_parameters()[0] == 128
    assert isinstance(peftplug.config_from_dict({"peft_type": "SCALE"}), ScaleConfig)


def test_a_model_no_backend_knows_is_a_clear_error():
    with pytest.raises(
        BackendError,
        match="no peftplug backend recognises a model of type builtins.object; registered backends: paddle, torch",
    ):
        peftplug.get_peft_model(object(), peftplug.LoraConfig())


def test_disable_env_warns_about_a_name_that_is_no_plugin(monkeypatch):
    """A misspelt name in PEFTPLUG_DISABLE_PLUGINS would disable nothing: the warning names it
    and lists the plugins that can be disabled."""
    monkeypatch.setenv("PEFTPLUG_DISABLE_PLUGINS", "lora, bogus")
    with pytest.warns(RuntimeWarning, match=r"PEFTPLUG_DISABLE_PLUGINS names unknown plugin\(s\) 'bogus'") as caught:
        manager = PluginManager(load_entry_points=False)
    assert "lora" not in manager.methods
    message = str(caught[0].message)
    assert "known plugins: " in message and "lora" in message and "torch" in message and "ia3" in message


def test_disable_env_with_known_names_does_not_warn(monkeypatch):
    import warnings

    monkeypatch.setenv("PEFTPLUG_DISABLE_PLUGINS", "ia3,peftplug.plugins.prompt_tuning")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager = PluginManager(load_entry_points=False)
    assert "ia3" not in manager.methods and "prompt_tuning" not in manager.methods


def test_a_declared_factory_answers_when_no_hook_does():
    """A method that declares its torch layers and encoders, and implements no hook, is built
    from its declarations on torch; a backend it declares nothing for gets None (the core's
    "no plugin implements" error)."""
    manager = PluginManager(load_entry_points=False)
    manager.register(TagMethods(), "tag-methods")
    assert manager.wrap_layer("tag", "torch", "q", "q", TagConfig(), "default") == ("declared", "q")
    assert manager.wrap_layer("tag", "paddle", "q", "q", TagConfig(), "default") is None
    assert manager.build_prompt_encoder("tag_prompt", "torch", TagPromptConfig(), "m") == ("declared encoder", "m")
    assert manager.build_prompt_encoder("tag_prompt", "paddle", TagPromptConfig(), "m") is None


def test_a_hook_overrides_a_declaration():
    """``peftplug_wrap_layer`` and ``peftplug_build_prompt_encoder`` are asked first: an answer
    wins over the method's declaration; a None falls through to it."""

    class Override:
        @peftplug.hookimpl
        def peftplug_wrap_layer(self, method, backend, layer, name, config, adapter_name):
            return ("override", layer) if name == "overridden" else None

        @peftplug.hookimpl
        def peftplug_build_prompt_encoder(self, method, backend, config, model):
            return ("override encoder", model) if model == "overridden" else None

    manager = PluginManager(load_entry_points=False)
    manager.register(TagMethods(), "tag-methods")
    manager.register(Override(), "override")
    assert manager.wrap_layer("tag", "torch", "q", "overridden", TagConfig(), "default") == ("override", "q")
    assert manager.wrap_layer("tag", "torch", "q", "q", TagConfig(), "default") == ("declared", "q")
    encoder = manager.build_prompt_encoder("tag_prompt", "torch", TagPromptConfig(), "overridden")
    assert encoder == ("override encoder", "overridden")
    assert manager.build_prompt_encoder("tag_prompt", "torch", TagPromptConfig(), "m") == ("declared encoder", "m")


@pytest.mark.parametrize(
    "declaration, problem",
    [
        ({"layers": {"torch": "tag_layers.wrap"}}, r"layers\['torch'\] is 'tag_layers.wrap', not a 'module:attribute'"),
        ({"layers": {"paddle": ":wrap"}}, r"layers\['paddle'\] is ':wrap', not a 'module:attribute'"),
        ({"layers": "tag_layers:wrap"}, "layers must be a mapping, got str"),
        ({"namespaces": {"tagged": "tag:Model"}}, r"namespaces\['tagged'\] must be a mapping, got str"),
        (
            {"namespaces": {"tagged": {"Model": "tag.Model"}}},
            r"namespaces\['tagged'\]\['Model'\] is 'tag.Model', not a 'module:attribute'",
        ),
        (
            {"model_methods": {"combine": "tag_combine"}},
            r"model_methods\['combine'\] is 'tag_combine', not a 'module:attribute'",
        ),
        (
            {"prompt_encoders": {"torch": "tag:build"}},
            "prompt_encoders is for prompt methods, and this is a layer method",
        ),
    ],
)
def test_a_bad_factory_declaration_is_refused_naming_the_method(declaration, problem):
    class BadTag:
        @peftplug.hookimpl
        def peftplug_register_methods(self):
            return Method(name="tag", config_class=TagConfig, **declaration)

    manager = PluginManager(load_entry_points=False)
    manager.register(BadTag(), "bad-tag")
    with pytest.raises(PluginError, match=rf"plugin 'bad-tag' registered an invalid method: method 'tag': {problem}"):
        _ = manager.methods


TAGGED_MODEL = object()


class TaggedNamespace:
    """Registers "tag", which adds ``Model`` to ``peftplug.tagged`` and nothing to ``peftplug``."""

    @peftplug.hookimpl
    def peftplug_register_methods(self):
        return Method(name="tag", config_class=TagConfig, namespaces={"tagged": {"Model": f"{__name__}:TAGGED_MODEL"}})


def test_a_namespace_export_is_found_in_its_namespace_only():
    manager = PluginManager(load_entry_points=False)
    manager.register(TaggedNamespace(), "tagged")
    assert manager.method_exports("tagged")["Model"]() is TAGGED_MODEL
    assert "Model" not in manager.method_exports() and "TagConfig" in manager.method_exports()
    assert "Model" not in manager.method_exports("other")


def test_a_name_two_methods_put_in_one_namespace_names_both():
    class Rival:
        @peftplug.hookimpl
        def peftplug_register_methods(self):
            return Method(
                name="rival", config_class=TagPromptConfig, kind="prompt", namespaces={"tagged": {"Model": "x:Y"}}
            )

    manager = PluginManager(load_entry_points=False)
    manager.register(TaggedNamespace(), "tagged")
    manager.register(Rival(), "rival")
    with pytest.raises(RegistryError, match=r"'Model' in peftplug.tagged is declared by methods '(tag|rival)' and"):
        manager.method_exports("tagged")


def test_the_paddlenlp_namespace_lists_what_the_methods_declare_and_loads_no_plugin():
    """``peftplug.paddlenlp`` resolves its names from the methods' declarations (none is listed
    in the core), and importing it imports no plugin or framework."""
    code = (
        "import sys, peftplug.paddlenlp as api; "
        "loaded = [m for m in sys.modules if m.startswith(('peftplug.plugins', 'peftplug.backends', 'paddle', 'torch'))]; "
        "assert not loaded, loaded; print(' '.join(n for n in dir(api) if n[0].isupper()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert set(out.stdout.split()) >= {"LoRAConfig", "LoRAModel"}


def test_builtin_plugins_are_the_packages_on_disk():
    """Every package folder of backends/ and plugins/ is a built-in plugin, backends first, each
    group alphabetical; formats/ names its plugins in PLUGIN_MODULES instead."""
    folders = {
        root: sorted(p.parent.name for p in (ROOT / root).glob("*/__init__.py")) for root in ("backends", "plugins")
    }
    expected = [f"peftplug.backends.{name}" for name in folders["backends"]]
    for name in folders["plugins"]:
        package = f"peftplug.plugins.{name}"
        expected += [f"{package}.peft", f"{package}.paddlenlp"] if name == "formats" else [package]
    assert list(builtin_plugins()) == expected
    assert {"peftplug.backends.torch", "peftplug.plugins.lora", "peftplug.plugins.architectures"} <= set(expected)


def test_finding_the_builtins_imports_none_of_them():
    code = (
        "import sys, peftplug.discovery; before = set(sys.modules); found = peftplug.discovery.builtin_plugins(); "
        "new = sorted(set(sys.modules) - before); assert 'peftplug.plugins.lora' in found, found; assert not new, new"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
