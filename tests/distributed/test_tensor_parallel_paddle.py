"""LoRA and IA3 on fleet model parallelism (mp=2): 2 ranks on CPU (paddle.distributed.launch,
gloo) against the full adapters, PaddleNLP's own LoRAModel and its files.

One launched job (tests/distributed/tp_workers/paddle_worker.py, ``cpu`` mode) does every check that runs
without the mp forward kernels, which CPUs lack: the tests here read what it reports and the
files it wrote. The full adapters are built here with numpy (this process imports no Paddle).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peftplug import IA3Config, LoraConfig
from peftplug.adapter_io import write_adapter
from peftplug.distributed.tp_shards import write_shard_directory
from peftplug.pdparams import read_pdparams
from peftplug.plugins.formats.safetensors_io import read_safetensors
from peftplug.state import AdapterState

WORKERS = Path(__file__).parent / "tp_workers"
sys.path.insert(0, str(WORKERS))
import paddle_common as common  # noqa: E402

TIMEOUT = 240
LORA_KEYS = common.LAYERS * 7 * 2
IA3_KEYS = common.LAYERS * 4

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("paddle") is None or importlib.util.find_spec("paddlenlp") is None,
    reason="needs paddlepaddle and paddlenlp",
)


def launch(mode: str, out: Path, devices: str | None = None) -> list[dict]:
    """Run the worker on 2 ranks; each rank's report. Fails the test with the workers' logs
    when the job fails or outlives ``TIMEOUT``."""
    env = dict(os.environ, MKL_DEBUG_CPU_TYPE="5", OMP_NUM_THREADS="1", PEFTPLUG_TP_TIMEOUT="60", PYTHONUNBUFFERED="1")
    logs = out / "logs"
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs)]
    if devices:
        command += ["--devices", devices]
    command += [str(WORKERS / "paddle_worker.py"), mode, str(out)]

    def worker_logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-5000:]}" for p in sorted(logs.glob("workerlog.*")))

    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"paddle.distributed.launch {mode} did not finish within {TIMEOUT} s:\n{worker_logs()}")
    assert done.returncode == 0, f"paddle.distributed.launch {mode} failed:\n{done.stderr[-3000:]}\n{worker_logs()}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(common.DEGREE)]


def write_inputs(out: Path) -> None:
    """The full LoRA and IA3 adapters the worker loads, and a degree-4 split of the LoRA one."""
    lora = AdapterState(
        LoraConfig(
            task_type="CAUSAL_LM",
            r=common.RANK,
            lora_alpha=common.ALPHA,
            target_modules=common.LORA_TARGETS,
            inference_mode=True,
        ),
        common.lora_tensors(),
    )
    write_adapter(lora, out / "lora_init")
    ia3 = AdapterState(
        IA3Config(
            task_type="CAUSAL_LM",
            target_modules=common.IA3_TARGETS,
            feedforward_modules=common.IA3_FEEDFORWARD,
            inference_mode=True,
        ),
        common.ia3_tensors(),
    )
    write_adapter(ia3, out / "ia3_init")
    write_shard_directory(lora, out / "degree4", degree=4, split_axes=common.lora_axis)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The 2-rank CPU job, once for this module: its output directory and both ranks' reports."""
    out = tmp_path_factory.mktemp("paddle_tp")
    write_inputs(out)
    return out, launch("cpu", out)


def _assert_all_equal(report: dict, count: int) -> None:
    assert report["count"] == count, report
    assert report["max_diff"] == 0.0 and not report.get("wrong_axes"), report


def test_adapters_are_sharded_as_paddlenlp_shards_them(job):
    _, ranks = job
    for rank, report in enumerate(ranks):
        assert report["rank"] == rank and report["group"] == [rank, 2, "PaddleTensorParallelGroup"]
        assert report["lora_layers"] == ["ColumnParallelLoraLinear", "RowParallelLoraLinear"]
        # [shape, is_distributed, split_axis] in Paddle's layout, as PaddleNLP's own layers on the same model
        assert (
            report["lora_marks"]
            == report["paddlenlp_marks"]
            == {
                "q_A": [[64, 4], False, None],
                "q_B": [[4, 32], True, 1],
                "o_A": [[32, 4], True, 0],
                "o_B": [[4, 64], False, None],
            }
        )
        assert report["ia3_local_shapes"] == {"q": [1, 32], "o": [1, 64], "up": [1, 64], "down": [1, 64]}


def test_loading_a_whole_adapter_gives_each_rank_its_slice(job):
    _, ranks = job
    for report in ranks:
        _assert_all_equal(report["lora_split_on_load"], LORA_KEYS)
        _assert_all_equal(report["ia3_split_on_load"], IA3_KEYS)
        # PaddleNLP's LoRAModel splits peftplug's merged file exactly as peftplug does
        _assert_all_equal({**report["paddlenlp_split_vs_ours"], "wrong_axes": []}, LORA_KEYS)
        assert report["paddlenlp_split_vs_ours"]["keys"] == LORA_KEYS


def test_merged_save_is_the_full_adapter_without_a_trace_of_the_degree(job):
    out, ranks = job
    lora, ia3 = common.lora_tensors(), common.ia3_tensors()
    assert sorted(p.name for p in (out / "lora_merged").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = (out / "lora_merged" / "adapter_config.json").read_text()
    assert "tensor_parallel" not in config and json.loads(config)["r"] == common.RANK
    for directory, want in (("lora_merged", lora), ("ia3_merged", ia3)):
        got = read_safetensors(out / directory / "adapter_model.safetensors")
        # HF PEFT's format holds HF's module tree, whichever framework saved it
        want = {key.replace(".model.llama.", ".model.model."): value for key, value in want.items()}
        assert sorted(got) == sorted(want) and len(got) in (LORA_KEYS, IA3_KEYS)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for report in ranks:
        assert report["sees_merged_after_save"]  # rank 1 returned only once rank 0 had renamed
        assert report["lora_gathered_state"] == 0.0 and report["ia3_gathered_state"] == 0.0

    paddlenlp = out / "lora_merged_pnlp"
    assert sorted(p.name for p in paddlenlp.iterdir()) == ["lora_config.json", "lora_model_state.pdparams"]
    assert json.loads((paddlenlp / "lora_config.json").read_text())["tensor_parallel_degree"] == -1
    got = read_pdparams(paddlenlp / "lora_model_state.pdparams")
    assert len(got) == LORA_KEYS
    for key, value in lora.items():
        paddle_key = key[len("base_model.model.") :].removesuffix(".weight")
        np.testing.assert_array_equal(got[paddle_key], value.T, err_msg=key)


def test_merged_file_loads_in_paddlenlp_without_model_parallelism(job):
    _, ranks = job
    rank0 = ranks[0]
    _assert_all_equal(rank0["unsharded_paddlenlp_tensors"], LORA_KEYS)
    logits = rank0["unsharded_logits"]
    assert logits["paddlenlp_vs_peftplug"] <= 1e-6
    assert logits["adapter_effect"] > 1e-2  # the adapter does change the logits
    # trainable and total counts are the unsharded model's on every rank
    full = common.RANK * sum(sum(common.features(m)) for m in common.COLUMN + common.ROW) * common.LAYERS
    assert rank0["unsharded_trainable"][0] == full
    for report in ranks:
        assert report["trainable"] == rank0["unsharded_trainable"]


def test_unmerged_saves_are_per_rank_files_like_paddlenlp_writes(job):
    out, ranks = job
    assert sorted(p.name for p in (out / "lora_shards").iterdir()) == [
        "adapter_config.json",
        "adapter_model.tp00-of-02.safetensors",
        "adapter_model.tp01-of-02.safetensors",
        "tensor_parallel.json",
    ]
    ours, theirs = out / "lora_shards_pnlp", out / "pnlp_shards"
    # PaddleNLP also writes the model's config.json; peftplug writes the index of split axes
    assert sorted(p.name for p in ours.iterdir()) == [
        "lora_config.json",
        "lora_model_state.tp00.pdparams",
        "lora_model_state.tp01.pdparams",
        "tensor_parallel.json",
    ]
    assert sorted(p.name for p in theirs.iterdir()) == [
        "config.json",
        "lora_config.json",
        "lora_model_state.tp00.pdparams",
        "lora_model_state.tp01.pdparams",
    ]
    our_config = json.loads((ours / "lora_config.json").read_text())
    their_config = json.loads((theirs / "lora_config.json").read_text())
    assert our_config["tensor_parallel_degree"] == their_config["tensor_parallel_degree"] == 2
    # task_type: peftplug's own field, which PaddleNLP's LoRAConfig.from_pretrained skips
    assert our_config.pop("task_type") == "CAUSAL_LM"
    assert {k: v for k, v in our_config.items() if k != "target_modules"} == {
        k: v for k, v in their_config.items() if k != "target_modules"
    }
    compared = 0
    for rank in range(2):
        name = f"lora_model_state.tp{rank:02d}.pdparams"
        mine, paddlenlp = read_pdparams(ours / name), read_pdparams(theirs / name)
        assert sorted(mine) == sorted(paddlenlp) and len(mine) == LORA_KEYS
        for key in paddlenlp:
            np.testing.assert_array_equal(mine[key], paddlenlp[key], err_msg=f"rank {rank} {key}")
            compared += 1
    assert compared == 2 * LORA_KEYS
    for report in ranks:
        for source in ("lora_merged", "lora_shards", "lora_shards_pnlp"):
            _assert_all_equal(report[f"lora_reload_{source}"], LORA_KEYS)
        _assert_all_equal(report["ia3_reload_shards"], IA3_KEYS)


def test_peftplug_merge_joins_paddlenlp_shards_into_paddlenlp_merged_save(job, tmp_path):
    from peftplug.app.cli import main

    out, ranks = job
    joined = tmp_path / "joined"
    assert main(["merge", str(out / "pnlp_shards"), "--out", str(joined)]) == 0
    assert sorted(p.name for p in joined.iterdir()) == ["lora_config.json", "lora_model_state.pdparams"]
    got = read_pdparams(joined / "lora_model_state.pdparams")
    want = read_pdparams(out / "pnlp_merged" / "lora_model_state.pdparams")
    assert sorted(got) == sorted(want) and len(want) == LORA_KEYS
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    config = json.loads((joined / "lora_config.json").read_text())
    assert (
        config["tensor_parallel_degree"]
        == json.loads((out / "pnlp_merged" / "lora_config.json").read_text())["tensor_parallel_degree"]
        == -1
    )
    for report in ranks:  # and PaddleNLP's files load into the sharded model, merged or not
        _assert_all_equal(report["peftplug_loads_pnlp_shards"], LORA_KEYS)
        _assert_all_equal(report["peftplug_loads_pnlp_merged"], LORA_KEYS)


def test_merging_into_the_base_works_on_local_pieces(job):
    _, ranks = job
    for report in ranks:
        assert report["lora_merge_local"]["count"] == LORA_KEYS // 2
        assert report["lora_merge_local"]["max_diff"] < 1e-6


def test_shards_of_another_degree_and_prompt_methods_are_refused(job):
    _, ranks = job
    for report in ranks:
        error = report["degree_error"]
        assert error.startswith("TensorParallelError") and "degree 4" in error and "degree 2" in error
        for method, key in (("prefix_tuning", "prefix_error"), ("prompt_tuning", "prompt_error")):
            assert report[key].startswith("PeftplugError") and method in report[key]
            assert "not supported on a tensor-parallel model" in report[key]


def test_a_failing_rank_fails_the_other_and_leaves_no_adapter(job):
    out, ranks = job
    rank0, rank1 = ranks[0]["failures"], ranks[1]["failures"]

    assert rank1["rank1_raises"]["error"] == "RuntimeError: injected failure on rank 1"
    assert rank0["rank1_raises"]["error"].startswith("TensorParallelError")
    assert "rank 1" in rank0["rank1_raises"]["error"] and "injected failure on rank 1" in rank0["rank1_raises"]["error"]
    assert rank0["rank1_raises"]["seconds"] < 5
    assert rank0["rank1_raises"]["contents"] is None and rank1["rank1_raises"]["contents"] is None

    assert rank0["rank0_write_fails"]["error"] == "OSError: injected write failure on rank 0"
    assert rank1["rank0_write_fails"]["error"].startswith("TensorParallelError")
    assert (
        "rank 0" in rank1["rank0_write_fails"]["error"]
        and "injected write failure" in rank1["rank0_write_fails"]["error"]
    )
    assert not rank0["rank0_write_fails"]["contents"] and rank1["rank0_write_fails"]["seconds"] < 5

    assert rank0["all_fine"]["error"] is None and rank1["all_fine"]["error"] is None
    assert rank0["all_fine"]["contents"] == ["adapter_config.json", "adapter_model.safetensors"]

    absent = rank0["rank1_absent"]
    assert absent["error"].startswith("TensorParallelError") and "rank(s) [1] did not reach" in absent["error"]
    assert 5 <= absent["seconds"] < 20 and absent["contents"] is None


def _gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return len([line for line in listed.stdout.splitlines() if line.startswith("GPU ")])


@pytest.mark.skipif(
    _gpus() < 2,
    reason="fleet's mp forward ops (c_identity, c_concat, mp_allreduce) have no CPU kernel: needs 2 GPUs",
)
def test_sharded_forward_matches_the_unsharded_model(tmp_path):
    write_inputs(tmp_path)
    ranks = launch("forward", tmp_path, devices="0,1")
    assert ranks[0]["forward_max_diff"] < 1e-4
