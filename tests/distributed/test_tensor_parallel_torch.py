"""LoRA under DTensor tensor parallelism: 2 ranks on CPU (torchrun, gloo) against one process.

The worker (tests/distributed/tp_workers/lora_worker.py) shards a tiny Llama with ``parallelize_module``
(q, k, v, gate, up column-parallel; o, down row-parallel), loads the same initial adapter as the
single-process run here, trains, and saves merged and unmerged; the tests compare losses,
logits and files with the single-process run, with ``peft``, and with the offline join.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peftplug.distributed.tp_shards import (
    TensorParallelError,
    find_shard_set,
    join_shard_directory,
    shard_file_name,
    split_array,
    write_shard_directory,
)
from peftplug.plugins.formats.safetensors_io import read_safetensors

WORKERS = Path(__file__).parent / "tp_workers"
sys.path.insert(0, str(WORKERS))
import tp_common  # noqa: E402

TIMEOUT = 180
TOLERANCE = 1e-5


def torchrun(mode: str, out: Path, init: Path, timeout_env: str = "60") -> subprocess.CompletedProcess:
    """Run the worker on 2 ranks; fail the test with its output when it fails or hangs."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PEFTPLUG_TP_TIMEOUT=timeout_env, PYTHONUNBUFFERED="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKERS / "lora_worker.py"),
        mode,
        str(out),
        str(init),
    ]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun {mode} did not finish within {TIMEOUT} s:\n{error.stdout}\n{error.stderr}")
    assert done.returncode == 0, f"torchrun {mode} failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def run(tmp_path_factory, torch):
    """The single-process reference and the 2-rank run, once for this module's tests."""
    import peftplug
    from peftplug import LoraConfig

    root = tmp_path_factory.mktemp("tp")
    train_ids, eval_ids = tp_common.batches(torch)
    model = peftplug.get_peft_model(
        tp_common.build_llama(torch),
        LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=tp_common.TARGETS),
    )
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(root / "init")
    init_logits = tp_common.logits(torch, model, eval_ids)
    losses = tp_common.train(torch, model, train_ids)
    model.save_pretrained(root / "single")
    reference = {
        "init_logits": init_logits,
        "losses": losses,
        "logits": tp_common.logits(torch, model, eval_ids),
        "trainable": model.get_nb_trainable_parameters(),
    }
    out = root / "out"
    out.mkdir()
    state = peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), root / "init").adapter_state()
    write_shard_directory(state, out / "degree4", degree=4, split_axes=_lora_axes(state.tensors))
    torchrun("train", out, root / "init")
    result = json.loads((out / "rank0.json").read_text())
    return {"root": root, "out": out, "reference": reference, "result": result, "eval_ids": eval_ids}


def _lora_axes(tensors):
    """Column-parallel: lora_B on axis 0; row-parallel (o, down): lora_A on axis 1."""
    axes = {}
    for key in tensors:
        row = any(f".{name}." in key for name in tp_common.ROW)
        axes[key] = (1 if row else None) if ".lora_A." in key else (None if row else 0)
    return axes


def test_lora_tensors_are_sharded_like_their_base_layer(run):
    placements = run["result"]["placements"]
    assert placements["q_A"] == "(Replicate(),)" and placements["q_B"] == "(Shard(dim=0),)"
    assert placements["o_A"] == "(Shard(dim=1),)" and placements["o_B"] == "(Replicate(),)"
    assert placements["q_B_local"] == [32, 4] and placements["o_A_local"] == [4, 32]
    # counts are of whole (global) tensors, as in one process
    assert (run["result"]["trainable"], run["result"]["total"]) == tuple(run["reference"]["trainable"])


def test_forward_and_training_match_one_process(run):
    out, reference = run["out"], run["reference"]
    np.testing.assert_allclose(np.load(out / "init_logits.npy"), reference["init_logits"], atol=TOLERANCE, rtol=0)
    assert np.max(np.abs(np.array(run["result"]["losses"]) - np.array(reference["losses"]))) <= TOLERANCE
    assert reference["losses"][-1] < reference["losses"][0] - 0.01  # it did learn
    np.testing.assert_allclose(np.load(out / "trained_logits.npy"), reference["logits"], atol=TOLERANCE, rtol=0)


def test_merged_save_is_one_ordinary_adapter_equal_to_one_process(run):
    merged, single = run["out"] / "merged", run["root"] / "single"
    assert sorted(p.name for p in merged.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((merged / "adapter_config.json").read_text()) == json.loads(
        (single / "adapter_config.json").read_text()
    )
    got, want = (
        read_safetensors(merged / "adapter_model.safetensors"),
        read_safetensors(single / "adapter_model.safetensors"),
    )
    assert sorted(got) == sorted(want) and len(got) == 2 * 2 * 7
    for key in want:
        assert got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], atol=TOLERANCE, rtol=0, err_msg=key)
    rank1 = json.loads((run["out"] / "rank1.json").read_text())
    assert rank1["sees_merged_after_save"]  # save_pretrained returned on rank 1 only after rank 0 renamed


def test_merged_adapter_loads_unsharded_in_peftplug_and_peft(run, torch):
    import peft

    import peftplug

    merged, eval_ids = run["out"] / "merged", run["eval_ids"]
    ours = tp_common.logits(torch, peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), merged), eval_ids)
    theirs = tp_common.logits(
        torch, peft.PeftModel.from_pretrained(tp_common.build_llama(torch), str(merged)), eval_ids
    )
    sharded = np.load(run["out"] / "trained_logits.npy")
    np.testing.assert_allclose(ours, sharded, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(theirs, ours, atol=1e-6, rtol=0)


def test_merged_adapter_resplits_and_merges_into_a_new_sharded_model(run):
    out = run["out"]
    sharded = np.load(out / "trained_logits.npy")
    np.testing.assert_allclose(np.load(out / "resplit_logits.npy"), sharded, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.load(out / "from_shards_logits.npy"), sharded, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.load(out / "merged_logits.npy"), sharded, atol=1e-4, rtol=0)


def test_unmerged_shards_joined_offline_equal_the_merged_save(run, tmp_path):
    shards = run["out"] / "shards"
    names = sorted(p.name for p in shards.iterdir())
    assert names == [
        "adapter_config.json",
        "adapter_model.tp00-of-02.safetensors",
        "adapter_model.tp01-of-02.safetensors",
        "tensor_parallel.json",
    ]
    index = json.loads((shards / "tensor_parallel.json").read_text())
    assert index["tensor_parallel_degree"] == 2 and index["format"] == "peft"
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    down = "base_model.model.model.layers.1.mlp.down_proj"
    assert index["split_axes"][f"{q}.lora_B.weight"] == 0 and index["split_axes"][f"{q}.lora_A.weight"] is None
    assert index["split_axes"][f"{down}.lora_A.weight"] == 1 and index["split_axes"][f"{down}.lora_B.weight"] is None
    piece = read_safetensors(shards / "adapter_model.tp01-of-02.safetensors")
    assert piece[f"{q}.lora_B.weight"].shape == (32, 4) and piece[f"{down}.lora_A.weight"].shape == (4, 64)

    written = join_shard_directory(shards, tmp_path / "joined")
    assert sorted(p.name for p in written) == ["adapter_config.json", "adapter_model.safetensors"]
    joined = read_safetensors(tmp_path / "joined" / "adapter_model.safetensors")
    merged = read_safetensors(run["out"] / "merged" / "adapter_model.safetensors")
    assert sorted(joined) == sorted(merged)
    for key in merged:
        np.testing.assert_array_equal(joined[key], merged[key], err_msg=key)


def test_shards_of_another_degree_are_refused(run, torch):
    import peftplug

    error = run["result"]["degree_error"]
    assert error is not None and error.startswith("TensorParallelError")
    assert "degree 4" in error and "degree 2" in error
    with pytest.raises(TensorParallelError, match=r"degree 2.*degree 1"):
        peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), run["out"] / "shards")


def test_prompt_learning_is_refused_on_a_sharded_model(run):
    error = run["result"]["prefix_error"]
    assert error is not None and error.startswith("PeftplugError")
    assert "prefix_tuning" in error and "not supported on a tensor-parallel model" in error


def test_a_failing_rank_fails_the_others_and_leaves_no_adapter(run, tmp_path):
    out = tmp_path / "fail"
    out.mkdir()
    torchrun("fail", out, run["root"] / "init", timeout_env="6")
    rank0 = json.loads((out / "fail_rank0.json").read_text())
    rank1 = json.loads((out / "fail_rank1.json").read_text())

    assert rank1["rank1_raises"]["type"] == "RuntimeError"
    assert rank0["rank1_raises"]["type"] == "TensorParallelError"
    assert "rank 1" in rank0["rank1_raises"]["error"] and "injected failure on rank 1" in rank0["rank1_raises"]["error"]
    assert rank0["rank1_raises"]["seconds"] < 6
    assert rank0["rank1_raises"]["contents"] is None and rank1["rank1_raises"]["contents"] is None

    assert rank0["rank0_write_fails"]["type"] == "OSError"
    assert rank1["rank0_write_fails"]["type"] == "TensorParallelError"
    assert (
        "rank 0" in rank1["rank0_write_fails"]["error"]
        and "injected write failure" in rank1["rank0_write_fails"]["error"]
    )
    assert not rank0["rank0_write_fails"]["contents"]

    assert rank0["all_fine"]["error"] is None and rank1["all_fine"]["error"] is None
    assert rank0["all_fine"]["contents"] == ["adapter_config.json", "adapter_model.safetensors"]

    absent = rank0["rank1_absent"]
    assert absent["type"] == "TensorParallelError" and "rank(s) [1] did not reach" in absent["error"]
    assert 6 <= absent["seconds"] < 30 and absent["contents"] is None


def test_shard_names_and_split_join_round_trip(tmp_path):
    assert shard_file_name("adapter_model.safetensors", 1, 2) == "adapter_model.tp01-of-02.safetensors"
    assert shard_file_name("lora_model_state.pdparams", 0, 4) == "lora_model_state.tp00-of-04.pdparams"
    array = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    pieces = [split_array(array, 0, rank, 2) for rank in range(2)]
    assert [p.shape for p in pieces] == [(4, 3), (3, 3)]
    from peftplug.distributed.tp_shards import join_arrays

    np.testing.assert_array_equal(join_arrays(pieces, 0, "x"), array)
    with pytest.raises(TensorParallelError, match="'x'.*whole"):
        join_arrays([array, array[:2]], None, "x")


def test_incomplete_shard_sets_are_errors_naming_what_is_missing(run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run["out"] / "shards", broken)
    (broken / "adapter_model.tp01-of-02.safetensors").unlink()
    with pytest.raises(TensorParallelError, match=r"rank\(s\) \[1\]"):
        find_shard_set(broken)
    other = tmp_path / "other"
    shutil.copytree(run["out"] / "degree4", other)
    (other / "adapter_model.tp03-of-04.safetensors").rename(other / "adapter_model.tp03-of-08.safetensors")
    with pytest.raises(TensorParallelError, match="disagree on the tensor-parallel degree"):
        find_shard_set(other)


def test_shards_without_an_index_are_joined_by_inferring_axes(run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run["out"] / "shards", bare)
    (bare / "tensor_parallel.json").unlink()
    join_shard_directory(bare, tmp_path / "joined")
    joined = read_safetensors(tmp_path / "joined" / "adapter_model.safetensors")
    merged = read_safetensors(run["out"] / "merged" / "adapter_model.safetensors")
    for key in merged:
        np.testing.assert_array_equal(joined[key], merged[key], err_msg=key)


def test_ia3_vectors_follow_their_axis_and_train_as_in_one_process(tmp_path, torch):
    import peftplug
    from peftplug import IA3Config

    train_ids, _ = tp_common.batches(torch)
    config = IA3Config(
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "o_proj", "up_proj", "down_proj"],
        feedforward_modules=["up_proj", "down_proj"],
    )
    model = peftplug.get_peft_model(tp_common.build_llama(torch), config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "ia3_l" in name:
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(tmp_path / "init")
    losses = tp_common.train(torch, model, train_ids)
    model.save_pretrained(tmp_path / "single")
    out = tmp_path / "out"
    out.mkdir()
    torchrun("ia3", out, tmp_path / "init")
    result = json.loads((out / "rank0.json").read_text())
    # column-parallel q/up: output axis split; row-parallel o/down: input axis split
    assert result["placements"] == {
        "q_proj": "(Shard(dim=0),)",
        "o_proj": "(Replicate(),)",
        "up_proj": "(Replicate(),)",
        "down_proj": "(Shard(dim=1),)",
    }
    assert np.max(np.abs(np.array(result["losses"]) - np.array(losses))) <= TOLERANCE
    assert losses[-1] < losses[0]
    want = read_safetensors(tmp_path / "single" / "adapter_model.safetensors")
    init = read_safetensors(tmp_path / "init" / "adapter_model.safetensors")
    assert max(np.abs(want[key] - init[key]).max() for key in want) > 1e-3  # the vectors did train
    for directory in (out / "merged", tmp_path / "joined"):
        if directory.name == "joined":
            join_shard_directory(out / "shards", directory)
        got = read_safetensors(directory / "adapter_model.safetensors")
        assert sorted(got) == sorted(want) and len(got) == 2 * 4
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=TOLERANCE, rtol=0, err_msg=key)


def test_paddlenlp_style_shards_join_into_the_merged_adapter(run, tmp_path):
    """PaddleNLP's unmerged save: lora_model_state.tp00.pdparams, tp01, no index, Paddle layout
    (B split on axis 1 for column-parallel, A on axis 0 for row-parallel), lora_config.json
    saying tensor_parallel_degree 2. Built here from the merged adapter with the paddlenlp format
    plugin (which names and configures the shards as PaddleNLP does); without the index, axes
    are inferred when joining."""
    from peftplug.adapter_io import read_adapter
    from peftplug.pdparams import read_pdparams

    merged = run["out"] / "merged"
    state = read_adapter(merged)
    shards = tmp_path / "paddlenlp_shards"
    write_shard_directory(state, shards, degree=2, split_axes=_lora_axes(state.tensors), format="paddlenlp")
    (shards / "tensor_parallel.json").unlink()
    assert sorted(p.name for p in shards.iterdir()) == [
        "lora_config.json",
        "lora_model_state.tp00.pdparams",
        "lora_model_state.tp01.pdparams",
    ]
    assert json.loads((shards / "lora_config.json").read_text())["tensor_parallel_degree"] == 2
    piece = read_pdparams(shards / "lora_model_state.tp01.pdparams")
    assert piece["model.layers.0.self_attn.q_proj.lora_B"].shape == (4, 32)  # [r, out / 2]
    assert piece["model.layers.0.mlp.down_proj.lora_A"].shape == (64, 4)  # [in / 2, r]

    join_shard_directory(shards, tmp_path / "joined", to="peft")
    joined = read_safetensors(tmp_path / "joined" / "adapter_model.safetensors")
    want = read_safetensors(merged / "adapter_model.safetensors")
    assert sorted(joined) == sorted(want)
    for key in want:
        np.testing.assert_allclose(joined[key], want[key], atol=0, rtol=0, err_msg=key)
    join_shard_directory(shards, tmp_path / "joined_paddlenlp")
    assert json.loads((tmp_path / "joined_paddlenlp" / "lora_config.json").read_text())["tensor_parallel_degree"] == -1
