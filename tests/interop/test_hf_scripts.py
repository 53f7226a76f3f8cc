"""Issue 21's done-when: HF PEFT scripts run on peftplug with only their import changed.

Each script (``tests/support/hf_scripts/``) is run twice on the same tiny local model: as written
with HF PEFT, and with ``from peft import`` made ``from peftplug import``. Both runs train with
``transformers.Trainer``, reload the last checkpoint and generate; peftplug's checkpoints hold no
base weights."""

from __future__ import annotations

import pytest
from hf_scripts import run_script, save_tiny_bloom, save_tiny_mt5

pytest.importorskip("peft")
pytest.importorskip("tokenizers")
BASE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _assert_adapter_only(checkpoint):
    files = {path.name for path in checkpoint.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not files & set(BASE_WEIGHTS)


@pytest.mark.parametrize("method", ["prompt_tuning_text", "p_tuning_mlp", "p_tuning_lstm", "prefix_projection"])
def test_the_seed_tutorials_trainer_script_runs_with_only_its_import_changed(torch, tmp_path, method):
    model_dir = save_tiny_bloom(tmp_path / "bloom")
    results = {
        library: run_script(
            "bloom_prompt_trainer", library, MODEL_DIR=str(model_dir), OUTPUT_DIR=str(tmp_path / library), METHOD=method
        )
        for library in ("peft", "peftplug")
    }
    ours, theirs = results["peftplug"], results["peft"]
    _assert_adapter_only(tmp_path / "peftplug" / "checkpoint-4")
    assert ours["logit_gap"] <= 1e-5 and theirs["logit_gap"] <= 1e-5
    assert len(ours["generated"]) == ours["prompt_length"] + 3
    assert ours["losses"] == pytest.approx(theirs["losses"], abs=1e-3)
    assert (ours["logits"] - theirs["logits"]).abs().max().item() <= 1e-4
    assert ours["generated"] == theirs["generated"]


def test_an_mt5_lora_script_runs_with_only_its_import_changed(torch, tmp_path):
    model_dir = save_tiny_mt5(tmp_path / "mt5")
    results = {
        library: run_script("mt5_lora_trainer", library, MODEL_DIR=str(model_dir), OUTPUT_DIR=str(tmp_path / library))
        for library in ("peft", "peftplug")
    }
    ours, theirs = results["peftplug"], results["peft"]
    _assert_adapter_only(tmp_path / "peftplug" / "checkpoint-4")
    assert ours["merged_type"] == theirs["merged_type"] == "MT5ForConditionalGeneration"
    assert ours["logit_gap"] <= 1e-5 and ours["merged_gap"] <= 1e-5
    assert ours["losses"] == pytest.approx(theirs["losses"], abs=1e-3)
    assert (ours["logits"] - theirs["logits"]).abs().max().item() <= 1e-4
    assert ours["generated"] == theirs["generated"]
