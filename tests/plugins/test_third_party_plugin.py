"""A third-party plugin, installed with pip: examples/peftplug-bitfit adds the method "bitfit".

The package is pip-installed into the running interpreter (once per session, unless it is
installed already) and found by peftplug through its entry point, exactly as a user's would be.
Broken plugins are simulated with throw-away ``*.dist-info`` folders on ``sys.path``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from convert_models import (
    assert_close,
    assert_torch_adapter_moves_to_paddle,
    hf_model,
    paddle_logits,
    paddle_model,
    torch_logits,
    train_torch,
)
from repo_root import ROOT
from torch_lm import logits_of, model_inputs, train_steps

import peftplug
from peftplug.errors import ConfigError, PeftplugError, RegistryError
from peftplug.manager import DISABLE_ENV, LOAD_ENV, PluginManager, get_plugin_manager, reset_plugin_manager

EXAMPLE_DIR = ROOT / "examples" / "peftplug-bitfit"
DISTRIBUTION = "peftplug-bitfit"
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _bitfit_is_installed() -> bool:
    """True when the ``bitfit`` entry point is declared and its module can be imported."""
    importlib.invalidate_caches()
    declared = any(ep.name == "bitfit" for ep in importlib.metadata.entry_points(group="peftplug"))
    return declared and importlib.util.find_spec("peftplug_bitfit") is not None


def _can_build_without_isolation() -> bool:
    """True when this interpreter's setuptools can build an editable wheel by itself: 64 or
    newer, and before 70.1 only with ``wheel`` installed (a fresh Python 3.11 venv has
    setuptools 65 and no wheel; one of 3.12 or newer has no setuptools at all)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in (version.split(".") + ["0"])[:2])
    if major < 64:
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="session")
def bitfit():
    """The installed ``peftplug_bitfit`` module; pip-installs examples/peftplug-bitfit if needed.

    The build runs in this interpreter (no network needed) when its setuptools can do it, and
    in pip's isolated build environment otherwise.
    """
    with pytest.MonkeyPatch.context() as patch:
        if not _bitfit_is_installed():
            isolation = ["--no-build-isolation"] if _can_build_without_isolation() else []
            command = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                *isolation,
                "-e",
                str(EXAMPLE_DIR),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"pip could not install {EXAMPLE_DIR}:\n{done.stdout}\n{done.stderr}")
            importlib.invalidate_caches()
            if importlib.util.find_spec("peftplug_bitfit") is None:
                # The editable install's .pth file is read by the next interpreter; this one
                # finds the package at its source, which is what the .pth points to anyway.
                patch.syspath_prepend(str(EXAMPLE_DIR))
            assert _bitfit_is_installed(), "the bitfit entry point is still not visible after pip install"
        reset_plugin_manager()
        yield importlib.import_module("peftplug_bitfit")
        reset_plugin_manager()


@pytest.fixture
def llama(make_model):
    """The tiny Llama of conftest (seed 0, no bias in any Linear)."""
    return make_model("llama")


def _out_features_of_targets(model, targets) -> int:
    """Sum of ``out_features`` over the modules whose last name component is in ``targets``."""
    return sum(m.out_features for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in targets)


# ---------------------------------------------------------------- discovery


def test_bitfit_is_listed_with_its_distribution(bitfit):
    """What ``peftplug methods`` prints: each method with the distribution that provides it."""
    manager = get_plugin_manager()
    listing = {
        method.name: (method.peft_type, manager.distribution_of(manager.methods.owner(method.name)))
        for method in manager.methods
    }
    assert listing["bitfit"] == ("BITFIT", DISTRIBUTION)
    assert listing["lora"] == ("LORA", "peftplug")
    assert manager.methods.get("bitfit").config_class is bitfit.BitFitConfig
    assert manager.methods.get("bitfit").kind == "layer"
    assert not [f for f in manager.failures if f.distribution == DISTRIBUTION]


def test_fresh_interpreter_finds_bitfit_without_importing_torch(bitfit, tmp_path):
    """Discovery through the entry point in a new process; neither peftplug nor the plugin's
    ``__init__`` imports torch."""
    script = textwrap.dedent(
        """
        import sys
        import peftplug
        manager = peftplug.get_plugin_manager()
        method = manager.methods.get("bitfit")
        print(manager.distribution_of(manager.methods.owner("bitfit")), method.config_class.__module__)
        print("torch" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [DISTRIBUTION, "peftplug_bitfit.config", "False"]


def test_disable_plugins_leaves_bitfit_out(bitfit, monkeypatch):
    """PEFTPLUG_DISABLE_PLUGINS takes entry-point names; the built-ins stay."""
    monkeypatch.setenv(DISABLE_ENV, "bitfit")
    manager = PluginManager()
    assert "bitfit" not in manager.methods
    assert "lora" in manager.methods
    assert "bitfit" not in dict(manager.pm.list_name_plugin())
    with pytest.raises(RegistryError, match="BITFIT"):
        manager.method_for_peft_type("BITFIT")
    monkeypatch.delenv(DISABLE_ENV)
    assert "bitfit" in PluginManager().methods


def test_load_plugins_limits_entry_points_to_the_named_ones(bitfit, monkeypatch):
    """PEFTPLUG_LOAD_PLUGINS="" loads no entry point at all; naming bitfit loads it."""
    builtins = PluginManager(load_entry_points=False).methods.names()
    assert "lora" in builtins and "bitfit" not in builtins
    monkeypatch.setenv(LOAD_ENV, "")
    assert PluginManager().methods.names() == builtins
    monkeypatch.setenv(LOAD_ENV, "bitfit")
    assert PluginManager().methods.names() == sorted(builtins + ["bitfit"])


# ---------------------------------------------------------------- broken plugins

BROKEN_MODULES = {
    "missing": (None, "ModuleNotFoundError"),
    "raises": ("raise ImportError('peftplug_broken_raises needs libfoo')\n", "needs libfoo"),
    "typo": (
        "import peftplug\n\n@peftplug.hookimpl\ndef peftplug_register_method():\n    return None\n",
        "unknown hook(s): peftplug_register_method",
    ),
    "signature": (
        "import peftplug\n\n@peftplug.hookimpl\n"
        "def peftplug_wrap_layer(method, backend, layer, widget):\n    return None\n",
        "widget",
    ),
}


def _install_fake_distribution(directory: Path, module: str, source: str | None) -> None:
    """A ``peftplug-broken`` distribution in ``directory``: dist-info with one entry point
    ``broken = <module>``, and the module itself unless ``source`` is None."""
    info = directory / "peftplug_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: peftplug-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[peftplug]\nbroken = {module}\n")
    if source is not None:
        (directory / f"{module}.py").write_text(source)


@pytest.mark.parametrize("kind", sorted(BROKEN_MODULES))
def test_broken_plugin_is_reported_with_its_distribution(bitfit, kind, tmp_path, monkeypatch):
    """A plugin that fails to import or breaks the hook contract is named, with its
    distribution, in a RuntimeWarning and in ``failures``; every other plugin still loads."""
    module = f"peftplug_broken_{kind}"
    source, expected = BROKEN_MODULES[kind]
    _install_fake_distribution(tmp_path, module, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    try:
        with pytest.warns(RuntimeWarning, match=r"plugin 'broken' from distribution 'peftplug-broken'"):
            manager = PluginManager()
    finally:
        sys.modules.pop(module, None)
    assert [(f.name, f.distribution) for f in manager.failures] == [("broken", "peftplug-broken")]
    assert expected in manager.failures[0].error
    assert "broken" not in dict(manager.pm.list_name_plugin())
    builtins = PluginManager(load_entry_points=False)
    assert {"bitfit", "lora"} | set(builtins.methods.names()) <= set(manager.methods.names())
    assert set(builtins.backends.names()) | {"torch"} <= set(manager.backends.names())
    assert set(builtins.formats.names()) | {"peft"} <= set(manager.formats.names())
    # Disabling the broken plugin silences it.
    monkeypatch.setenv(DISABLE_ENV, "broken")
    assert PluginManager().failures == []


# ---------------------------------------------------------------- config


def test_config_from_dict_builds_bitfit_config(bitfit):
    """adapter_config.json's dict, dispatched on peft_type through the method registry."""
    config = peftplug.config_from_dict({"peft_type": "BITFIT", "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"})
    assert type(config) is bitfit.BitFitConfig
    assert config.target_modules == ["q_proj"]
    assert config.task_type == "CAUSAL_LM"
    assert config.to_dict()["peft_type"] == "BITFIT"
    assert peftplug.config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"target_modules": []}, "target_modules"),
        ({"target_modules": "q_proj("}, "target_modules"),
        ({"target_modules": 3}, "target_modules"),
        ({"target_modules": ["q_proj"], "exclude_modules": "[unclosed"}, "exclude_modules"),
    ],
)
def test_invalid_config_names_the_field(bitfit, fields, field):
    """Refusals go through AdapterConfig._fail: a ConfigError naming the field."""
    with pytest.raises(ConfigError) as caught:
        bitfit.BitFitConfig(**fields)
    assert caught.value.field == field
    assert f"BitFitConfig.{field}=" in str(caught.value)


# ---------------------------------------------------------------- training, saving, merging


def test_only_bias_deltas_train(bitfit, llama):
    """Trainable parameters are one zero delta of out_features values per target module."""
    base_total = sum(p.numel() for p in llama.parameters())
    expected = _out_features_of_targets(llama, TARGETS)
    model = peftplug.get_peft_model(llama, bitfit.BitFitConfig(target_modules=TARGETS))
    assert model.get_nb_trainable_parameters() == (expected, base_total + expected)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * len(TARGETS)
    for name, parameter in trainable.items():
        assert name.endswith(".bitfit_bias.default"), name
        assert not parameter.any()


def test_default_targets_are_all_linear_but_the_output_layer(bitfit, llama):
    """``target_modules`` defaults to "all-linear": lm_head is left out."""
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    expected = _out_features_of_targets(llama, linear)
    model = peftplug.get_peft_model(llama, bitfit.BitFitConfig())
    assert model.get_nb_trainable_parameters()[0] == expected
    assert type(model.base_model.model.lm_head).__name__ == "Linear"


def test_train_save_load_merge(bitfit, torch, llama, tmp_path):
    """Training changes the logits; the saved adapter reloads onto a fresh base with identical
    logits; merging gives the unmerged logits with plain nn.Linear modules."""
    from peftplug_bitfit.torch_layer import BitFitLinear

    fresh = copy.deepcopy(llama)
    inputs = model_inputs(torch, "llama")
    base_logits = logits_of(torch, llama, inputs)
    base_weights = {name: p.detach().clone() for name, p in llama.named_parameters()}

    model = peftplug.get_peft_model(llama, bitfit.BitFitConfig(task_type="CAUSAL_LM", target_modules=TARGETS))
    torch.testing.assert_close(logits_of(torch, model, inputs), base_logits, rtol=0, atol=0)
    train_steps(torch, model, inputs)
    trained = logits_of(torch, model, inputs)
    assert not torch.allclose(trained, base_logits, atol=1e-3)
    for name, parameter in model.base_model.model.named_parameters():
        if "bitfit_bias" not in name:
            assert torch.equal(parameter, base_weights[name.replace(".base_layer", "")]), name
    with model.disable_adapter():
        torch.testing.assert_close(logits_of(torch, model, inputs), base_logits, rtol=0, atol=0)

    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "BITFIT"
    assert saved["target_modules"] == TARGETS
    from safetensors.numpy import load_file

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    wrapped = [n for n, m in fresh.named_modules() if n.rsplit(".", 1)[-1] in TARGETS]
    assert sorted(tensors) == sorted(f"base_model.model.{n}.bitfit_bias" for n in wrapped)
    for name in wrapped:
        assert tensors[f"base_model.model.{name}.bitfit_bias"].shape == (fresh.get_submodule(name).out_features,)
    assert type(peftplug.AdapterConfig.from_pretrained(tmp_path)) is bitfit.BitFitConfig

    loaded = peftplug.PeftModel.from_pretrained(fresh, tmp_path)
    assert torch.equal(logits_of(torch, loaded, inputs), trained)
    assert loaded.get_nb_trainable_parameters()[0] == 0

    merged = model.merge_and_unload()
    torch.testing.assert_close(logits_of(torch, merged, inputs), trained, rtol=0, atol=1e-5)
    assert not [m for m in merged.modules() if isinstance(m, BitFitLinear)]
    for name in wrapped:
        layer = merged.get_submodule(name)
        assert type(layer) is torch.nn.Linear
        assert layer.bias is not None and layer.bias.any()


def test_merge_then_unmerge_restores_the_bias_less_base(bitfit, torch, llama):
    """Merging creates the missing biases; unmerging removes them again."""
    inputs = model_inputs(torch, "llama")
    model = peftplug.get_peft_model(llama, bitfit.BitFitConfig(target_modules=["q_proj"]))
    train_steps(torch, model, inputs)
    trained = logits_of(torch, model, inputs)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.base_layer.bias is None
    model.merge_adapter()
    assert q_proj.merged and q_proj.base_layer.bias is not None
    torch.testing.assert_close(logits_of(torch, model, inputs), trained, rtol=0, atol=1e-5)
    model.unmerge_adapter()
    assert not q_proj.merged and q_proj.base_layer.bias is None
    torch.testing.assert_close(logits_of(torch, model, inputs), trained, rtol=0, atol=1e-6)


def test_conv1d_with_bias_merges_into_it(bitfit, torch, make_model):
    """GPT-2's Conv1D (weight [in, out], bias present): the delta is added to its bias."""
    gpt2 = make_model("gpt2")
    original = gpt2.transformer.h[0].attn.c_attn.bias.detach().clone()
    inputs = model_inputs(torch, "gpt2")
    model = peftplug.get_peft_model(gpt2, bitfit.BitFitConfig(target_modules=["c_attn", "c_fc"]))
    assert model.get_nb_trainable_parameters()[0] == 2 * (3 * 32 + 4 * 32)
    train_steps(torch, model, inputs)
    trained = logits_of(torch, model, inputs)
    layer = model.base_model.model.transformer.h[0].attn.c_attn
    delta = layer.bitfit_bias["default"].detach().clone()
    merged = model.merge_and_unload()
    torch.testing.assert_close(logits_of(torch, merged, inputs), trained, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.transformer.h[0].attn.c_attn.bias.detach(), original + delta)


def test_second_adapter_trains_alone_and_round_trips(bitfit, torch, llama, tmp_path):
    """Adapters live side by side in one layer; set_adapter switches which one trains."""
    inputs = model_inputs(torch, "llama")
    model = peftplug.get_peft_model(llama, bitfit.BitFitConfig(target_modules=["v_proj"]))
    model.add_adapter("other", bitfit.BitFitConfig(target_modules=["v_proj"]))
    model.set_adapter("other")
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable and all(name.endswith(".bitfit_bias.other") for name in trainable)
    train_steps(torch, model, inputs)
    v_proj = model.base_model.model.model.layers[1].self_attn.v_proj
    assert not v_proj.bitfit_bias["default"].any() and v_proj.bitfit_bias["other"].any()
    model.delete_adapter("default")
    assert v_proj.adapter_names == ["other"]


def test_unsupported_layer_and_other_backends_are_not_answered(bitfit, llama):
    """BitFit declares layers for torch and Paddle only, and its torch factory says "not mine"
    for a layer type it does not wrap; a matched module of such a type is reported by the core."""
    method = get_plugin_manager().methods.get("bitfit")
    config = bitfit.BitFitConfig(target_modules=["embed_tokens"])
    assert method.layer_factory("jax") is None
    assert method.layer_factory("torch")(llama.model.embed_tokens, "embed_tokens", config, "default") is None
    with pytest.raises(PeftplugError, match="no plugin implements bitfit"):
        peftplug.get_peft_model(llama, bitfit.BitFitConfig(target_modules=["embed_tokens"]))


# ---------------------------------------------------------------- the plugin's own contract tests


def test_example_plugin_passes_the_contract_tests(bitfit):
    """``pytest`` in examples/peftplug-bitfit: its tests subclass peftplug.testing.MethodContract
    (opt-in through its pyproject's ``-p peftplug.testing``) and pass on every backend it
    claims; a backend whose framework is not installed is skipped, with the reason."""
    runner = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", runner, "-q", "-p", "no:cacheprovider", "-rs"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=EXAMPLE_DIR,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    summary = out.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", summary)) else 0
    assert "failed" not in summary and "error" not in summary, out
    assert passed + skipped == 10 and passed >= 5, summary  # 5 contract tests x (torch, paddle)
    installed = [name for name in ("torch", "transformers", "paddle", "paddlenlp") if importlib.util.find_spec(name)]
    if len(installed) == 4:
        assert (passed, skipped) == (10, 0), summary
    else:
        assert "not installed" in out, out  # the skip says why


# ---------------------------------------------------------------- between frameworks
def test_trained_on_torch_loads_on_paddle_in_both_formats(bitfit, torch, paddle, tmp_path):
    """BitFit declares its one tensor (``bitfit_bias``, along the output, 0 where a fused part is
    not adapted): with that alone it saves in PaddleNLP's layout (its own file names, which
    PaddleNLP itself cannot read), converts, and loads on Paddle with the torch logits."""
    config = bitfit.BitFitConfig(task_type="CAUSAL_LM", target_modules=TARGETS)
    assert_torch_adapter_moves_to_paddle(torch, paddle, config, tmp_path, stem="bitfit")


def test_fused_projections_take_zero_for_a_part_bitfit_does_not_adapt(bitfit, torch, paddle, tmp_path):
    """On PaddleNLP Llama's fused qkv_proj / gate_up_fused_proj, the bias delta of k_proj and
    up_proj, which BitFit does not adapt here, is 0: the declaration's fill."""
    config = bitfit.BitFitConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj", "gate_proj"])
    model = peftplug.get_peft_model(hf_model(torch, "llama"), config)
    train_torch(torch, model, steps=3)
    expected = torch_logits(torch, model)
    model.save_pretrained(tmp_path / "torch")
    fused_base = paddle_model(
        paddle, "llama", hf_model(torch, "llama"), fuse_attention_qkv=True, fuse_attention_ffn=True
    )
    peftplug.convert(tmp_path / "torch", tmp_path / "fused", to="paddlenlp", base_config=fused_base.config)
    loaded = peftplug.PeftModel.from_pretrained(fused_base, tmp_path / "fused")
    assert_close(paddle_logits(paddle, loaded), expected, "Paddle, fused projections")
    peftplug.convert(tmp_path / "fused", tmp_path / "back", to="peft", base_config=fused_base.config)
    back = peftplug.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / "back")
    assert_close(torch_logits(torch, back), expected, "torch, split back")
