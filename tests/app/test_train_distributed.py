"""``peftplug train`` across processes: a recipe's ``distributed`` section relaunches the command
through torchrun (2 CPU ranks, gloo); the loss of every step, the adapter and the report equal the
same recipe's on one process, with one progress bar and one adapter written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peftplug.app.recipe import RecipeError, load_recipe
from peftplug.plugins.formats.safetensors_io import read_safetensors

RECIPE = """training: {{steps: 2, batch_size: 4, lr: 0.01, seed: 0, max_length: 64}}
output: {{dir: {out}}}
distributed: {{engine: {engine}, processes: {processes}}}
"""
TIMEOUT = 180


def write_recipe(tmp_path: Path, engine: str, processes: int) -> Path:
    """A 2-step recipe of the demo job with a distributed section, its output in tmp_path."""
    path = tmp_path / f"{engine}{processes}.yaml"
    out = tmp_path / f"out_{engine}{processes}"
    path.write_text(RECIPE.format(out=out, engine=engine, processes=processes))
    return path


def peftplug_train(recipe: Path) -> subprocess.CompletedProcess:
    """``peftplug train RECIPE`` in a new process (with its progress bar); fails the test on error."""
    env = dict(os.environ, MKL_DEBUG_CPU_TYPE="5", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "peftplug.app.cli", "train", str(recipe)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"peftplug train failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, torch):
    """The recipe's report and output directory on one process."""
    from peftplug.app.cli import main

    root = tmp_path_factory.mktemp("one")
    assert main(["train", str(write_recipe(root, "ddp", 1)), "--no-progress"]) == 0
    out = root / "out_ddp1"
    return json.loads((out / "train_report.json").read_text()), out


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_train_as_one_with_one_bar_and_one_adapter(engine, one_process, tmp_path):
    want, single = one_process
    done = peftplug_train(write_recipe(tmp_path, engine, 2))
    out = tmp_path / f"out_{engine}2"
    got = json.loads((out / "train_report.json").read_text())
    np.testing.assert_allclose(got["losses"], want["losses"], atol=1e-5, rtol=0)
    assert got["tokens"] == want["tokens"] and got["steps"] == 2
    assert abs(got["eval_loss_after"] - want["eval_loss_after"]) <= 1e-5
    # one bar (rank 0's): it starts once; tqdm may draw its last state twice (on update and on close)
    assert done.stderr.count("| 0/2 [") == 1 and "2/2" in done.stderr
    assert done.stdout.count("saved adapter to") == 1 and done.stdout.count("trainable params") == 1
    adapters = sorted(p.name for p in out.iterdir() if p.name.startswith("adapter_"))
    assert adapters == ["adapter_config.json", "adapter_model.safetensors"]
    theirs, ours = (
        read_safetensors(single / "adapter_model.safetensors"),
        read_safetensors(out / "adapter_model.safetensors"),
    )
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, rtol=0, err_msg=key)


def test_distributed_section_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed: {engine: zero3, processes: 3}\ntraining: {batch_size: 4}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(bad)
    message = str(error.value)
    assert (
        "distributed.engine='zero3' is not a distributed engine of backend torch; allowed: one of ddp, fsdp" in message
    )
    assert "distributed.processes=3 does not divide training.batch_size=4" in message
    merged = tmp_path / "merged.yaml"
    merged.write_text("distributed: {engine: ddp, processes: 2}\noutput: {merge: true}\n")
    with pytest.raises(RecipeError, match=r"output\.merge=True is not supported across processes"):
        load_recipe(merged)
