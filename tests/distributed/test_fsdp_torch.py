"""LoRA under FSDP2 (``fully_shard`` per decoder layer and at the root): 2 ranks on CPU (torchrun,
gloo) against one process on the same global batch.

One job (tests/distributed/dp_workers/fsdp_worker.py) does every check; the tests here compare
what it reports and writes with the single-process run, with HF PEFT, and with the saves' rules
(one adapter, written by rank 0, a failing rank failing the others).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from torchrun_jobs import torchrun

WORKERS = Path(__file__).parent / "dp_workers"
sys.path.insert(0, str(WORKERS))
import dp_common  # noqa: E402
from dp_common import tp_common  # noqa: E402

TOLERANCE = 1e-5
FAIL_TIMEOUT = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory, torch):
    """The 2-rank job and the single-process references, once for this module's tests."""
    import peftplug

    root = tmp_path_factory.mktemp("fsdp")
    dp_common.initial_adapter(torch, root / "init")
    out = root / "out"
    torchrun(WORKERS / "fsdp_worker.py", "fsdp", str(out), str(root / "init"), timeout_env=str(FAIL_TIMEOUT))
    train_ids, eval_ids = dp_common.global_batch(torch)

    reloaded = peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), out / "saved", is_trainable=True)
    reloaded_logits = tp_common.logits(torch, reloaded, eval_ids)
    reloaded_loss, _ = dp_common.adamw_step(torch, reloaded, train_ids)
    return {
        "root": root,
        "out": out,
        "eval_ids": eval_ids,
        "ranks": [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)],
        "report": json.loads((out / "rank0.json").read_text()),
        "arrays": dict(np.load(out / "arrays.npz")),
        **dp_common.single_process_step(torch, root / "init", root / "single"),
        "reloaded_logits": reloaded_logits,
        "reloaded_loss": reloaded_loss,
        "reloaded_trained": tp_common.logits(torch, reloaded, eval_ids),
    }


def test_adapter_is_sharded_and_a_step_equals_one_process(run):
    rank0 = run["ranks"][0]
    assert rank0["placement"] == ["DTensor", "(Shard(dim=0),)", [2, 64]]
    dp_common.assert_step_equals_one_process(run)


def test_save_is_one_adapter_from_rank_0_that_hf_peft_loads(run, torch):
    import peft

    saved = run["out"] / "saved"
    assert sorted(p.name for p in saved.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    dp_common.assert_same_files(saved, run["root"] / "single")
    assert run["ranks"][1]["rank_sees_saved"]  # save_pretrained returned on rank 1 after rank 0 wrote
    theirs = peft.PeftModel.from_pretrained(tp_common.build_llama(torch), str(saved))
    np.testing.assert_allclose(tp_common.logits(torch, theirs, run["eval_ids"]), run["logits"], atol=TOLERANCE, rtol=0)


def test_merge_and_unmerge_work_on_the_shards(run):
    np.testing.assert_allclose(run["arrays"]["merged"], run["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(run["arrays"]["unmerged"], run["logits"], atol=TOLERANCE, rtol=0)


def test_loading_onto_a_sharded_base_gives_each_rank_its_piece_and_trains_as_one_process(run):
    rank0 = run["ranks"][0]
    assert rank0["loaded_placement"] == ["DTensor", "(Shard(dim=0),)", [2, 64]]
    np.testing.assert_allclose(run["arrays"]["loaded"], run["reloaded_logits"], atol=TOLERANCE, rtol=0)
    assert abs(rank0["loaded_loss"] - run["reloaded_loss"]) <= TOLERANCE
    np.testing.assert_allclose(run["arrays"]["loaded_trained"], run["reloaded_trained"], atol=TOLERANCE, rtol=0)


def test_what_a_sharded_base_cannot_take_is_refused_by_name(run):
    rank0 = run["ranks"][0]
    assert rank0["second_adapter_error"].startswith("PeftplugError")
    assert "model.layers.0.self_attn.q_proj already holds one" in rank0["second_adapter_error"]
    assert "modules_to_save=['lm_head']" in rank0["modules_to_save_error"]
    assert "before fully_shard" in rank0["modules_to_save_error"]
    assert "already run" in rank0["after_running_error"] and "before running the model" in rank0["after_running_error"]
    assert rank0["after_running_untouched"]  # refused before any layer was wrapped
    assert "prefix_tuning" in rank0["prefix_error"] and "fully_shard (FSDP2) model" in rank0["prefix_error"]


def test_several_adapters_with_modules_to_save_and_prefix_tuning_sharded_after(run, torch, tmp_path):

    train_ids, _ = dp_common.global_batch(torch)
    several = dp_common.several_adapters(torch)
    loss, _ = dp_common.adamw_step(torch, several, train_ids)
    assert abs(run["ranks"][0]["several_loss"] - loss) <= TOLERANCE
    several.save_pretrained(tmp_path / "several")
    # AdamW's first step moves each value by about lr * g / (|g| + eps): where the lm_head copy's
    # gradient is near eps, a 1e-9 difference in g moves the value by ~1e-5 more
    dp_common.assert_same_files(run["out"] / "several", tmp_path / "several", tolerance=1e-4)
    assert (run["out"] / "several" / "other" / "adapter_model.safetensors").is_file()

    prefix = dp_common.prefix_tuning(torch)
    loss, _ = dp_common.adamw_step(torch, prefix, train_ids)
    assert abs(run["ranks"][0]["prefix_loss"] - loss) <= TOLERANCE
    prefix.save_pretrained(tmp_path / "prefix")
    dp_common.assert_same_files(run["out"] / "prefix", tmp_path / "prefix")


def test_a_failing_or_missing_rank_fails_the_others_and_leaves_no_adapter(run):
    rank0, rank1 = run["ranks"][0]["fail"], run["ranks"][1]["fail"]
    assert rank1["rank1_raises"]["type"] == "RuntimeError"
    assert rank0["rank1_raises"]["type"] == "TensorParallelError"
    assert "rank 1" in rank0["rank1_raises"]["error"] and "injected failure on rank 1" in rank0["rank1_raises"]["error"]
    assert rank0["rank1_raises"]["contents"] is None and rank1["rank1_raises"]["contents"] is None
    assert rank0["rank0_write_fails"]["type"] == "OSError"
    assert (
        "rank 0" in rank1["rank0_write_fails"]["error"]
        and "injected write failure" in rank1["rank0_write_fails"]["error"]
    )
    assert not rank0["rank0_write_fails"]["contents"]
    assert rank0["all_fine"]["contents"] == ["adapter_config.json", "adapter_model.safetensors"]
    absent = rank0["rank1_absent"]
    assert absent["type"] == "TensorParallelError" and "rank(s) [1] did not reach" in absent["error"]
    assert FAIL_TIMEOUT <= absent["seconds"] < 30 and absent["contents"] is None
