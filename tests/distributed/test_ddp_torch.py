"""LoRA under ``DistributedDataParallel`` and ``transformers.Trainer`` on 2 ranks (torchrun, gloo,
CPU) against one process on the same global batch.

One job (tests/distributed/dp_workers/ddp_worker.py) does both; the single-process runs are here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from torchrun_jobs import torchrun

from peftplug.plugins.formats.safetensors_io import read_safetensors

WORKERS = Path(__file__).parent / "dp_workers"
sys.path.insert(0, str(WORKERS))
import dp_common  # noqa: E402
from dp_common import tp_common  # noqa: E402

TOLERANCE = 1e-5
ADAPTER_FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, torch):
    """The 2-rank job and the single-process step, once for this module's tests."""

    root = tmp_path_factory.mktemp("ddp")
    dp_common.initial_adapter(torch, root / "init")
    out = root / "out"
    torchrun(WORKERS / "ddp_worker.py", "ddp", str(out), str(root / "init"))
    _, eval_ids = dp_common.global_batch(torch)
    return {
        "root": root,
        "out": out,
        "eval_ids": eval_ids,
        "ranks": [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)],
        "report": json.loads((out / "rank0.json").read_text()),
        "arrays": dict(np.load(out / "arrays.npz")),
        **dp_common.single_process_step(torch, root / "init", root / "single"),
    }


def test_a_ddp_step_equals_one_process(run):
    dp_common.assert_step_equals_one_process(run)


def test_rank_0_alone_writes_one_adapter_that_hf_peft_loads(run, torch):
    import peft

    saved = run["out"] / "saved"
    assert sorted(p.name for p in saved.iterdir()) == ADAPTER_FILES
    assert run["ranks"][1]["rank_sees_saved"]
    want = read_safetensors(run["root"] / "single" / "adapter_model.safetensors")
    got = read_safetensors(saved / "adapter_model.safetensors")
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=TOLERANCE, rtol=0, err_msg=key)
    theirs = peft.PeftModel.from_pretrained(tp_common.build_llama(torch), str(saved))
    np.testing.assert_allclose(tp_common.logits(torch, theirs, run["eval_ids"]), run["logits"], atol=TOLERANCE, rtol=0)


def test_is_main_process_false_writes_nothing(torch, tmp_path):
    import peftplug

    model = peftplug.get_peft_model(tp_common.build_llama(torch), peftplug.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "other_rank", is_main_process=False)
    assert not (tmp_path / "other_rank").exists()


def test_trainer_on_two_processes_checkpoints_one_adapter_equal_to_one_process(run, torch, tmp_path):
    import transformers

    import peftplug
    from peftplug.backends.torch.trainer import AdapterCheckpointCallback

    rank0 = run["ranks"][0]
    assert rank0["trainer_world_size"] == 2
    train_ids, _ = dp_common.global_batch(torch)
    model = peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), run["root"] / "init", is_trainable=True)
    rows = [{"input_ids": row, "labels": row} for row in train_ids.tolist()]
    arguments = dict(dp_common.trainer_arguments(tmp_path), per_device_train_batch_size=4)
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(**arguments),
        train_dataset=rows,
        callbacks=[AdapterCheckpointCallback()],
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    np.testing.assert_allclose(rank0["trainer_losses"], losses, atol=1e-4, rtol=0)  # as the Trainer logs them
    for step in (1, 2):
        checkpoint = run["out"] / "trainer" / f"checkpoint-{step}"
        adapters = sorted(p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("adapter_model.*"))
        assert adapters == ["adapter_model.safetensors"], checkpoint
        got = read_safetensors(checkpoint / "adapter_model.safetensors")
        want = read_safetensors(tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=TOLERANCE, rtol=0, err_msg=key)
