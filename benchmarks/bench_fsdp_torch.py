"""FSDP2: peftplug's LoRA against HF PEFT's under the same ``fully_shard`` wrapping, 2 processes
(torchrun, gloo, CPU, 1 thread per rank).

Each rank builds three equal Llama-shaped models with LoRA r=16 on all 7 linear kinds and
identical adapter weights: peftplug's, HF PEFT's and a second HF PEFT model, the A/A control;
each gets ``fully_shard`` per decoder layer and at the root on the same 1-D mesh. One training
step (forward with labels on this rank's half of the batch, backward with FSDP2's
reduce-scatter, AdamW) per timed run; the ranks start each run together (a barrier, untimed) and
a run's time is the slower rank's. Runs interleave in rounds with the order rotated each round;
medians, and the judged ratio: the median over rounds of peftplug's time / peft's in the same
round, with the A/A control's beside it as the noise floor. Peak live memory of one step's
forward and backward is counted per rank from torch's profiler.

``python benchmarks/bench_fsdp_torch.py`` launches the 2 ranks and writes
``benchmarks/results/fsdp_torch.md``; ``--quick`` is a small smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import heading, parser_for, publish  # noqa: E402
from bench_lora_torch import TARGETS, Sizes, llama, share_lora_weights, training_step  # noqa: E402
from bench_qlora_torch import peak_live_bytes  # noqa: E402
from rounds import round_order  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fsdp_torch.md"
FULL = Sizes(512, 1408, 4, 8, 8000, 4, 128, 0, 0, 0, 0)
QUICK = Sizes(128, 352, 2, 4, 1000, 2, 32, 0, 0, 0, 0)
LABELS = ("peftplug", "peft", "peft A/A")


def sharded_models(sizes: Sizes, mesh):
    """peftplug's, peft's and the A/A control's LoRA models, equal weights, each fully_shard-ed
    per decoder layer and at the root."""
    import peft
    from torch.distributed.fsdp import fully_shard

    import peftplug

    options = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    built = []
    for make in (
        lambda base: peftplug.get_peft_model(base, peftplug.LoraConfig(**options)),
        lambda base: peft.get_peft_model(base, peft.LoraConfig(**options)),
        lambda base: peft.get_peft_model(base, peft.LoraConfig(**options)),
    ):
        torch.manual_seed(0)
        built.append(make(llama(sizes).train()))
    ours, theirs, control = built
    share_lora_weights(theirs, ours)
    share_lora_weights(theirs, control)
    for model in built:
        for layer in model.base_model.model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return built


def worker(sizes: Sizes, repeats: int, warmup: int, out: Path) -> None:
    """One rank: time the three units in interleaved rounds; rank 0 writes the results to ``out``."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch * 2, sizes.tokens), generator=generator)
    input_ids = input_ids[rank * sizes.batch : (rank + 1) * sizes.batch]
    models = sharded_models(sizes, mesh)
    with torch.no_grad():
        logits = [model(input_ids=input_ids).logits for model in models[:2]]
    checks = {"logit_difference": float((logits[0] - logits[1]).abs().max())}
    memory = [peak_live_bytes(model, input_ids) for model in models[:2]]
    steps = [
        training_step(model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4), input_ids)
        for model in models
    ]
    seconds: dict[int, list[float]] = {index: [] for index in range(3)}
    for round_index in range(warmup + repeats):
        for index in round_order(range(3), round_index):
            dist.barrier()
            start = time.perf_counter()
            steps[index](None)
            elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            if round_index >= warmup:
                seconds[index].append(float(elapsed))
    peaks = torch.tensor(memory, dtype=torch.float64)
    gathered = [torch.zeros_like(peaks) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, peaks)
    if rank == 0:
        trainable = [list(model.get_nb_trainable_parameters()) for model in models[:2]]
        result = {
            "seconds": seconds,
            "memory": [g.tolist() for g in gathered],
            "checks": checks,
            "trainable": trainable,
        }
        out.write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def paired_ratio(first: list[float], second: list[float]) -> float:
    """Median over rounds of ``first``'s time divided by ``second``'s in the same round."""
    return statistics.median(a / b for a, b in zip(first, second))


def report(result: dict, sizes: Sizes, args, started: float) -> str:
    """The results file: settings, the tables, the checks."""
    import peft
    import transformers

    times = [result["seconds"][str(index)] for index in range(3)]
    medians = [1000 * statistics.median(t) for t in times]
    ratio, control = paired_ratio(times[0], times[1]), paired_ratio(times[2], times[1])
    memory_rows = [
        f"| rank {rank} | {ours / 2**20:.1f} MiB | {theirs / 2**20:.1f} MiB | {ours / theirs:.3f} |"
        for rank, (ours, theirs) in enumerate(result["memory"])
    ]
    return "\n".join(
        [
            "# FSDP2: peftplug vs HF PEFT under the same fully_shard wrapping (PyTorch, 2 CPU processes, gloo)",
            "",
            heading("bench_fsdp_torch.py", started),
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}, 2 ranks x 1 thread, {os.cpu_count()} CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"{sizes.heads} heads, vocab {sizes.vocab}; batch {sizes.batch} x {sizes.tokens} tokens per rank. "
            f"fully_shard per decoder layer and at the root; LoRA r=16, alpha 32, dropout 0 on "
            f"{', '.join(TARGETS)}, identical adapter weights. {args.repeats} rounds after {args.warmup} untimed "
            "ones, the order rotated each round; a run's time is the slower rank's.",
            "",
            "| operation | peftplug ms | peft ms | ratio (median per round) | A/A: peft copy / peft |",
            "|---|---:|---:|---:|---:|",
            f"| FSDP2 LoRA training step (forward + backward + AdamW) | {medians[0]:.1f} | {medians[1]:.1f} "
            f"| {ratio:.3f} | {control:.3f} |",
            "",
            "| peak live memory in one step (forward + backward, profiler) | peftplug | peft | ratio |",
            "|---|---:|---:|---:|",
            *memory_rows,
            "",
            f"- largest logit difference peftplug - peft (rank 0): {result['checks']['logit_difference']:.2e}",
            f"- trainable, all parameters: peftplug {tuple(result['trainable'][0])}, "
            f"peft {tuple(result['trainable'][1])}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Launch the 2 ranks (or, with ``--worker``, be one), print the table and write the results file."""
    parser = parser_for(__doc__, warmup=2)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 16)
    sizes = QUICK if args.quick else FULL
    if args.worker is not None:
        worker(sizes, args.repeats, args.warmup, args.worker)
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result_file = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        command += [__file__, *(argv if argv is not None else sys.argv[1:]), "--worker", str(result_file)]
        subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        result = json.loads(result_file.read_text())
    return publish(report(result, sizes, args, started), args, RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
