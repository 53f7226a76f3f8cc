"""Launching a test's torchrun worker on CPU ranks (gloo), failing the test with the worker's
output when it fails or hangs: what the data-parallel tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 180


def torchrun(worker: Path, *args: str, timeout_env: str = "60", processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``worker`` with ``args`` on ``processes`` ranks (one thread each); ``timeout_env`` is
    ``PEFTPLUG_TP_TIMEOUT``, how long a rank waits for the others at each step of a save."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PEFTPLUG_TP_TIMEOUT=timeout_env, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    try:
        done = subprocess.run([*command, str(worker), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun {worker.name} did not finish within {TIMEOUT} s:\n{error.stdout}\n{error.stderr}")
    assert done.returncode == 0, f"torchrun {worker.name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return done
