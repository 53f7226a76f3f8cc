"""LoRA on a 2 x 2 device mesh: ``fully_shard`` over one axis, tensor parallelism
(Colwise/RowwiseParallel) over the other, 4 ranks on CPU (torchrun, gloo), against one process on
the same global batch (tests/distributed/dp_workers/dp_tp_worker.py)."""

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


@pytest.fixture(scope="module")
def run(tmp_path_factory, torch):
    """The 4-rank job and the single-process step, once for this module's tests."""
    root = tmp_path_factory.mktemp("fsdp_tp")
    dp_common.initial_adapter(torch, root / "init")
    out = root / "out"
    torchrun(WORKERS / "dp_tp_worker.py", "dptp", str(out), str(root / "init"), processes=4)
    return {
        "root": root,
        "out": out,
        "report": json.loads((out / "rank0.json").read_text()),
        "arrays": dict(np.load(out / "arrays.npz")),
        **dp_common.single_process_step(torch, root / "init", root / "single"),
    }


def test_a_step_on_the_2d_mesh_equals_one_process(run):
    report = run["report"]
    assert report["placement"] == [2, [16, 4]]  # q_proj's lora_B [64, 4]: split over tp, then over dp
    dp_common.assert_step_equals_one_process(run)


def test_save_is_one_adapter_that_hf_peft_loads(run, torch):
    import peft

    saved = run["out"] / "saved"
    assert sorted(p.name for p in saved.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    dp_common.assert_same_files(saved, run["root"] / "single")
    _, eval_ids = dp_common.global_batch(torch)
    theirs = peft.PeftModel.from_pretrained(tp_common.build_llama(torch), str(saved))
    np.testing.assert_allclose(tp_common.logits(torch, theirs, eval_ids), run["logits"], atol=TOLERANCE, rtol=0)


def test_merge_and_unmerge_on_the_2d_mesh(run):
    assert run["report"]["merge_error"] is None
    np.testing.assert_allclose(run["arrays"]["merged"], run["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(run["arrays"]["unmerged"], run["logits"], atol=TOLERANCE, rtol=0)


def test_an_adapter_on_a_base_already_sharded_both_ways_is_refused_by_name(run):
    error = run["report"]["already_sharded_error"]
    assert error.startswith("PeftplugError") and "model.layers.0.self_attn.q_proj is tensor parallel" in error
    assert "before fully_shard" in error
