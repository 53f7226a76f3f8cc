"""Adapters built from a seed, and a child process that saves one (for the crash and concurrency
tests): ``python adapter_saves.py DIRECTORY SEED FORMAT [--kill-at N] [--repeat N]``.

No framework is imported: an adapter state of numpy arrays goes through the same formats and
commit as a model's save. With ``--kill-at N`` the child SIGKILLs itself just before the Nth
file-system call of the save (fsync, rename, unlink); with ``--kill-at 0`` it counts the calls
and prints the count. It prints ``ready`` just before the save starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np

FILESYSTEM_CALLS = ("fsync", "replace", "rename", "unlink")


def seeded_state(seed: int, size: int = 64):
    """A LoRA adapter of two layers' q and v whose every value, and ``lora_alpha``, follow from
    ``seed``: two seeds give adapters that differ in every file."""
    import peftplug
    from peftplug.state import AdapterState

    rng = np.random.default_rng(seed)
    config = peftplug.LoraConfig(r=8, lora_alpha=8 * seed, target_modules=["q_proj", "v_proj"])
    tensors = {}
    for layer in range(2):
        for module in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((8, size)).astype("float32")
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((size, 8)).astype("float32")
    return AdapterState(config, tensors)


def visible_files(directory: Path) -> dict[str, bytes]:
    """``{name: bytes}`` of the files a reader sees (hidden temporaries and journals left out)."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def _die_at(call_number: int) -> list[int]:
    """Count the save's file-system calls; SIGKILL this process before call ``call_number``."""
    count = [0]
    for name in FILESYSTEM_CALLS:
        real = getattr(os, name)

        def counted(*args, _real=real, **kwargs):
            count[0] += 1
            if count[0] == call_number:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)

        setattr(os, name, counted)
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("format")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    from peftplug.adapter_io import write_adapter

    state = seeded_state(args.seed, args.size)
    write_adapter(state, args.directory.parent / f".warm-{os.getpid()}", args.format)  # imports done before timing
    count = _die_at(args.kill_at) if args.kill_at is not None else None
    print("ready", flush=True)
    for _ in range(args.repeat):
        write_adapter(state, args.directory, args.format)
    if count is not None:
        print(count[0], flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
