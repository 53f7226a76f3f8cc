"""A sixth method, SSF, added as a folder of its own (tests/fixtures/peftplug_ssf): its torch and
Paddle layers and a declaration of its tensors. With no file of peftplug's edited for it, it
passes the method contract on both backends, moves between torch and Paddle with the same
logits, directly and through ``peftplug.convert``, and saves and loads in both formats."""

from __future__ import annotations

import peftplug_ssf
import pytest
from convert_models import (
    assert_changed,
    assert_close,
    assert_torch_adapter_moves_to_paddle,
    hf_model,
    paddle_logits,
    paddle_model,
    torch_logits,
    train_paddle,
    train_torch,
)
from repo_root import ROOT

import peftplug
from peftplug.manager import PluginManager, get_plugin_manager, reset_plugin_manager
from peftplug.testing import MethodContract

TARGETS = ["q_proj", "v_proj", "down_proj"]


class TestSSFContract(MethodContract):
    """Inject, train step, save/load and merge from the plugin-author kit, on both backends."""

    method = "ssf"
    backends = ("torch", "paddle")
    plugin = peftplug_ssf

    def make_config(self, backend: str) -> peftplug_ssf.SSFConfig:
        return peftplug_ssf.SSFConfig(task_type="CAUSAL_LM", target_modules=TARGETS)


@pytest.fixture
def ssf():
    """A process-wide plugin manager with SSF registered, for this test only."""
    reset_plugin_manager()
    get_plugin_manager().register(peftplug_ssf, name="peftplug_ssf", distribution="<tests/fixtures>")
    yield peftplug_ssf
    reset_plugin_manager()


def test_trained_on_torch_loads_on_paddle_in_both_formats(ssf, torch, paddle, tmp_path):
    config = ssf.SSFConfig(task_type="CAUSAL_LM", target_modules=TARGETS)
    assert_torch_adapter_moves_to_paddle(torch, paddle, config, tmp_path, stem="ssf")


def test_trained_on_paddle_loads_on_torch_in_both_formats(ssf, torch, paddle, tmp_path):
    pd = paddle_model(paddle, "llama", hf_model(torch, "llama"))
    base = paddle_logits(paddle, pd)
    model = peftplug.get_peft_model(pd, ssf.SSFConfig(task_type="CAUSAL_LM", target_modules=TARGETS))
    train_paddle(paddle, model, steps=3)
    expected = paddle_logits(paddle, model)
    assert_changed(expected, base)
    model.save_pretrained(tmp_path / "paddlenlp", format="paddlenlp")
    model.save_pretrained(tmp_path / "peft")
    peftplug.convert(tmp_path / "paddlenlp", tmp_path / "converted", to="peft", architecture="llama")
    converted = peftplug.AdapterConfig.from_pretrained(tmp_path / "converted")
    assert sorted(converted.target_modules) == sorted(TARGETS)

    for source in ("paddlenlp", "peft", "converted"):
        loaded = peftplug.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / source)
        assert_close(torch_logits(torch, loaded), expected, f"torch, from the {source} files")


def test_peftplug_names_no_file_of_the_fixture_method():
    """The method lives in its folder only: no module of peftplug, its plugins or backends
    mentions it."""
    sources = [p for folder in ("peftplug", "plugins", "backends") for p in (ROOT / folder).rglob("*.py")]
    naming = [str(p.relative_to(ROOT)) for p in sources if "ssf" in p.read_text().lower()]
    assert sources and not naming, naming


def test_fused_projections_take_the_declared_fill_for_a_missing_part(ssf, torch, paddle, tmp_path):
    """On PaddleNLP Llama's fused qkv_proj / gate_up_fused_proj, k_proj's and up_proj's parts,
    which SSF does not adapt, scale by 1 and shift by 0: read from the declaration (fill)."""
    hf = hf_model(torch, "llama")
    fused = {"fuse_attention_qkv": True, "fuse_attention_ffn": True}
    model = peftplug.get_peft_model(hf, ssf.SSFConfig(target_modules=["q_proj", "v_proj", "gate_proj"]))
    train_torch(torch, model, steps=3)
    expected = torch_logits(torch, model)
    model.save_pretrained(tmp_path / "torch")
    fused_base = paddle_model(paddle, "llama", hf_model(torch, "llama"), **fused)

    peftplug.convert(tmp_path / "torch", tmp_path / "fused", to="paddlenlp", base_config=fused_base.config)
    state = peftplug.adapter_io.read_adapter(tmp_path / "fused")
    assert sorted(state.config.target_modules) == ["gate_up_fused_proj", "qkv_proj"]
    scale = state.tensors["base_model.model.llama.layers.0.self_attn.qkv_proj.ssf_scale"]
    assert scale.shape == (64,) and (scale == 1).sum() >= 16, "k_proj's part filled with ones"
    loaded = peftplug.PeftModel.from_pretrained(fused_base, tmp_path / "fused")
    assert_close(paddle_logits(paddle, loaded), expected, "Paddle, fused projections")

    peftplug.convert(tmp_path / "fused", tmp_path / "back", to="peft", base_config=fused_base.config)
    back = peftplug.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / "back")
    assert_close(torch_logits(torch, back), expected, "torch, split back")


def test_ssf_declares_its_layers_and_implements_no_wrap_hook():
    """The contract above passes on torch and Paddle through ``Method.layers`` alone."""
    assert not hasattr(peftplug_ssf, "peftplug_wrap_layer")
    manager = PluginManager(load_entry_points=False)
    manager.register(peftplug_ssf, name="peftplug_ssf")
    assert set(manager.methods.get("ssf").layers) == {"torch", "paddle"}
