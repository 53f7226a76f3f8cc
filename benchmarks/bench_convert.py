"""``peftplug.convert`` of a Llama-7B-shaped LoRA adapter against plain file I/O of the same tensors.

The adapter: hidden 4096, intermediate 11008, 32 layers, LoRA r=16 on all seven linear layers
(39,976,960 float32 parameters, 160 MB), random tensors written as an HF PEFT directory.

Timed units, interleaved in rounds (the order rotated every round, ``rounds.round_order``;
before each run, ``os.sync()`` so that no unit pays for the writeback of the one before,
garbage collection and a short pause, as the machine is shared), medians over rounds:

- ``convert to paddlenlp``: ``peftplug.convert(peft_dir, dst, to="paddlenlp", architecture="llama")``
  (read safetensors, map the module tree, transpose to Paddle's layout, write pdparams + config);
- ``plain to paddlenlp``: ``safetensors.numpy.load_file`` + ``pickle.dump`` of the same tensors;
- ``convert to peft``: ``peftplug.convert(paddlenlp_dir, dst, to="peft")`` (safe unpickler,
  tree map, transpose, safetensors);
- ``plain to peft``: ``pickle.load`` + ``safetensors.numpy.save_file``.

The judged figure is the median over rounds of convert / plain in the same round (target
<= 2x); MB/s is the adapter's size over the median time. ``--quick`` runs 4 layers, 2 rounds.
Results go to ``benchmarks/results/convert.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import pickle
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rounds import round_order
from safetensors.numpy import load_file, save_file

import peftplug
from peftplug.adapter_io import write_adapter
from peftplug.state import AdapterState

RESULTS = Path(__file__).resolve().parent / "results" / "convert.md"
LINEARS = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (4096, 4096),
    "self_attn.v_proj": (4096, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (4096, 11008),
    "mlp.up_proj": (4096, 11008),
    "mlp.down_proj": (11008, 4096),
}


def synthetic_adapter(directory: Path, layers: int, rank: int) -> int:
    """Write a random LoRA adapter (HF PEFT format); returns its size in bytes."""
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(layers):
        for module, (fan_in, fan_out) in LINEARS.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, fan_in), dtype=np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((fan_out, rank), dtype=np.float32)
    config = peftplug.LoraConfig(
        task_type="CAUSAL_LM", r=rank, lora_alpha=2 * rank, target_modules=[m.split(".")[1] for m in LINEARS]
    )
    state = AdapterState(config, tensors)
    write_adapter(state, directory)
    return state.nbytes()


def timed(function: Callable[[], object]) -> float:
    """Seconds ``function`` takes, started with no dirty pages left by the unit before: a unit
    that does not fsync leaves its file to the kernel's writeback, which would otherwise land on
    the next unit's disk time."""
    os.sync()
    gc.collect()
    time.sleep(0.3)
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="4 layers, 2 rounds (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/convert.md")
    args = parser.parse_args()
    layers, rounds = (4, 2) if args.quick else (32, args.rounds)
    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        source = work / "peft"
        size = synthetic_adapter(source, layers, 16)
        paddle_dir = work / "paddlenlp"
        peftplug.convert(source, paddle_dir, to="paddlenlp", architecture="llama")
        pdparams = paddle_dir / "lora_model_state.pdparams"

        def fresh(name: str) -> Path:
            path = work / name
            shutil.rmtree(path, ignore_errors=True)
            return path

        def plain_to_paddle(sync: bool = False) -> None:
            tensors = load_file(str(source / "adapter_model.safetensors"))
            with open(fresh("plain_pd.pdparams"), "wb") as file:
                pickle.dump(tensors, file, protocol=4)
                if sync:
                    file.flush()
                    os.fsync(file.fileno())

        def plain_to_peft(sync: bool = False) -> None:
            with open(pdparams, "rb") as file:
                tensors = pickle.load(file)
            tensors.pop("StructuredToParameterName@@", None)
            target = fresh("plain_hf.safetensors")
            save_file(tensors, str(target), metadata={"format": "pt"})
            if sync:
                descriptor = os.open(target, os.O_RDONLY)
                os.fsync(descriptor)
                os.close(descriptor)

        units = {
            "convert to paddlenlp": lambda: peftplug.convert(
                source, fresh("out_pd"), to="paddlenlp", architecture="llama"
            ),
            "plain to paddlenlp": plain_to_paddle,
            "convert to peft": lambda: peftplug.convert(paddle_dir, fresh("out_hf"), to="peft"),
            "plain to peft": plain_to_peft,
            "plain+fsync to paddlenlp": lambda: plain_to_paddle(sync=True),
            "plain+fsync to peft": lambda: plain_to_peft(sync=True),
        }
        times: dict[str, list[float]] = {name: [] for name in units}
        for round_index in range(rounds):
            for name in round_order(units, round_index):
                times[name].append(timed(units[name]))
        ratios = {
            direction: statistics.median(
                c / p for c, p in zip(times[f"convert to {direction}"], times[f"plain to {direction}"])
            )
            for direction in ("paddlenlp", "peft")
        }
        synced = {
            direction: statistics.median(
                c / p for c, p in zip(times[f"convert to {direction}"], times[f"plain+fsync to {direction}"])
            )
            for direction in ("paddlenlp", "peft")
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    parameters = size // 4
    lines = [
        "# peftplug.convert vs plain file I/O (LoRA, Llama-7B shape)",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, numpy {np.__version__}; {layers} layers, r=16 on all 7 linear layers: "
        f"{parameters:,d} float32 parameters ({size / 1e6:.0f} MB); {rounds} interleaved rounds, medians. "
        "Produced by `benchmarks/bench_convert.py`" + (" --quick" if args.quick else "") + ".",
        "",
        "| unit | median s | MB/s |",
        "| --- | ---: | ---: |",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.3f} | {size / 1e6 / median:.0f} |")
    lines += [
        "",
        "| direction | convert / plain (median of per-round ratios) | target | convert / (plain + fsync) |",
        "| --- | ---: | ---: | ---: |",
        *(f"| to {d} | {r:.2f}x | <= 2x | {synced[d]:.2f}x |" for d, r in ratios.items()),
        "",
        "plain = safetensors.numpy.load_file + pickle.dump (to paddlenlp), pickle.load + "
        "safetensors.numpy.save_file (to peft), of the same tensors, no renaming or transposing; "
        "plain+fsync also fsyncs the file written, as peftplug's atomic write does. "
        "convert also maps the module tree, transposes every matrix to the target layout, reads "
        "pdparams with a loader that runs no code from the file, and writes atomically.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
