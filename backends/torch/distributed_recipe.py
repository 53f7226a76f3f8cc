"""``peftplug train`` across processes on PyTorch: the launcher and the data-parallel engines of
a recipe's ``distributed`` section (``ddp``: ``DistributedDataParallel``; ``fsdp``: FSDP2's
``fully_shard`` on each module the model's ``_no_split_modules`` names, then at the root).

Each rank takes its contiguous share of every batch; the loss of a step is the global batch's
(the summed loss and the number of labelled tokens are all-reduced), so the same recipe on one
process gives the same first-step loss.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import torch
from torch import nn

from peftplug.app.recipe_run import LAUNCHED_ENV


def launch(processes: int, cli_args: list[str]) -> int:
    """Run ``peftplug`` with ``cli_args`` on ``processes`` local processes through torchrun
    (gloo on CPU, one thread each); its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += ["-m", "peftplug.app.cli", *cli_args]
    env = dict(os.environ, **{LAUNCHED_ENV: "1"})
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(command, env=env).returncode


class DataParallelJob:
    """This process's place in the job: its rank, the number of ranks, and the engine."""

    def __init__(self, engine: str):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        self.engine = engine
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._dist = dist

    def wrap(self, model: nn.Module) -> nn.Module:
        """What runs the forward: ``model`` in DDP, or ``model`` itself once fully_shard-ed."""
        if self.engine == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model)
        from torch.distributed.fsdp import fully_shard

        inner = model.base_model.model
        blocks = set(getattr(inner, "_no_split_modules", None) or ())
        for module in list(inner.modules()):
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(model)
        return model

    def share(self, examples: list[Any]) -> list[Any]:
        """This rank's contiguous share of a batch."""
        size = len(examples) // self.world
        return examples[self.rank * size : (self.rank + 1) * size]

    def total(self, value: float | int) -> float:
        """``value`` summed over every rank."""
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        self._dist.all_reduce(tensor)
        return float(tensor)

    def close(self) -> None:
        """Wait for every rank, then leave the process group."""
        self._dist.barrier()
        self._dist.destroy_process_group()
