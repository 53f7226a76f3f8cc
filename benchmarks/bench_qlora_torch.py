"""QLoRA: peftplug's LoRA against HF PEFT's on a 4-bit nf4 base (bitsandbytes, PyTorch, CPU).

A Llama-shaped model is saved once and loaded three times with
``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")`` (float32 compute), so the
three quantized bases are equal: peftplug's, HF PEFT's and a second HF PEFT model, the A/A
control. LoRA r=16 on all 7 linear kinds, identical adapter weights (B nonzero; logits and
gradients checked equal first). One training step (forward with labels, backward, AdamW) per
timed run, runs interleaved in rounds with the order rotated each round, medians, and the
judged ratio: the median over rounds of peftplug's time / peft's in the same round, with the A/A
control's ratio beside it as the noise floor. Timing cannot see memory, so each side's peak
live memory in one step is counted from torch's profiler (its allocations and frees in order).

``python benchmarks/bench_qlora_torch.py`` writes ``benchmarks/results/qlora_torch.md``;
``--quick`` is a small smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lora_torch import (  # noqa: E402
    TARGETS,
    Quiet,
    Sizes,
    Unit,
    interleave,
    llama,
    max_gradient_difference,
    max_logit_difference,
    share_lora_weights,
    training_step,
)

RESULTS = Path(__file__).resolve().parent / "results" / "qlora_torch.md"
FULL = Sizes(1024, 2816, 4, 16, 32000, 4, 128, 0, 0, 0, 0)
QUICK = Sizes(128, 352, 2, 4, 1000, 2, 32, 0, 0, 0, 0)


def quantized(directory: Path):
    """The saved model loaded 4-bit nf4, float32 compute, on the CPU, in training mode."""
    import transformers

    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, quantization_config=config, device_map="cpu", dtype=torch.float32
        )
    return model.train()


def models(directory: Path):
    """peftplug's, peft's and the A/A control's LoRA models on equal quantized bases, with the
    adapter weights of peft's copied into the other two."""
    import peft

    import peftplug

    options = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    ours = peftplug.get_peft_model(quantized(directory), peftplug.LoraConfig(**options))
    theirs = peft.get_peft_model(quantized(directory), peft.LoraConfig(**options))
    control = peft.get_peft_model(quantized(directory), peft.LoraConfig(**options))
    share_lora_weights(theirs, ours)
    share_lora_weights(theirs, control)
    return ours, theirs, control


def peak_live_bytes(model, input_ids: torch.Tensor) -> int:
    """The peak, over one training step's forward and backward, of the bytes allocated and not
    yet freed since the step began (torch's profiler, CPU allocations in order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    model.zero_grad(set_to_none=True)
    live = peak = 0
    for event in sorted(recorded.events(), key=lambda event: event.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def benchmark(sizes: Sizes, repeats: int, warmup: int) -> tuple[list[Unit], list[str], dict[str, int]]:
    """The three training-step units (peftplug, peft, peft A/A), the checks, and peak memory."""
    with tempfile.TemporaryDirectory() as directory:
        torch.manual_seed(0)
        llama(sizes).save_pretrained(directory)
        ours, theirs, control = models(Path(directory))
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(2))
    checks = [
        f"largest logit difference peftplug - peft: {max_logit_difference(ours, theirs, input_ids):.2e}",
        f"largest LoRA gradient difference peftplug - peft: {max_gradient_difference(ours, theirs, input_ids):.2e}",
        f"trainable, all parameters: peftplug {ours.get_nb_trainable_parameters()}, "
        f"peft {theirs.get_nb_trainable_parameters()}",
    ]
    for model in (ours, theirs, control):
        model.train()
    memory = {"peftplug": peak_live_bytes(ours, input_ids), "peft": peak_live_bytes(theirs, input_ids)}
    units = []
    for label, model in (("peftplug", ours), ("peft", theirs), ("peft (A/A)", control)):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        units.append(Unit(label, training_step(model, optimizer, input_ids)))
    interleave(units, repeats, warmup, Quiet())
    return units, checks, memory


def report(units: list[Unit], checks: list[str], memory: dict[str, int], sizes: Sizes, args, seconds: float) -> str:
    """The results file: settings, the table, the checks."""
    import bitsandbytes
    import peft
    import transformers

    ours, theirs, control = units
    command = "python benchmarks/bench_qlora_torch.py " + " ".join(sys.argv[1:])
    ratio = ours.paired_ratio(theirs)
    return "\n".join(
        [
            "# QLoRA: peftplug vs HF PEFT on a 4-bit nf4 base (bitsandbytes, PyTorch, CPU)",
            "",
            f"`{command.strip()}` — {datetime.datetime.now():%Y-%m-%d %H:%M}, {seconds:.0f} s in all.",
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"bitsandbytes {bitsandbytes.__version__}, Python {platform.python_version()}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"{sizes.heads} heads, vocab {sizes.vocab}; batch {sizes.batch} x {sizes.tokens} tokens. Base "
            "loaded 4-bit nf4 (float32 compute) three times from one saved model; LoRA r=16, alpha 32, "
            f"dropout 0 on {', '.join(TARGETS)}, identical adapter weights. {args.repeats} rounds after "
            f"{args.warmup} untimed ones, the order rotated each round.",
            "",
            "| operation | peftplug ms | peft ms | ratio (median per round) | A/A: peft copy / peft | target |",
            "|---|---:|---:|---:|---:|---|",
            f"| QLoRA training step (forward + backward + AdamW) | {ours.median_ms:.1f} | {theirs.median_ms:.1f} "
            f"| {ratio:.3f} | {control.paired_ratio(theirs):.3f} | <= 1.00 "
            f"({'met' if ratio <= 1.0 else 'not met'}) |",
            "",
            "| peak live memory in one step (forward + backward, profiler) | peftplug | peft | ratio |",
            "|---|---:|---:|---:|",
            f"| bytes | {memory['peftplug'] / 2**20:.1f} MiB | {memory['peft'] / 2**20:.1f} MiB "
            f"| {memory['peftplug'] / memory['peft']:.3f} |",
            "",
            *[f"- {check}" for check in checks],
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, few rounds (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--output", type=Path, default=None, help="where to write the table")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 16)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    units, checks, memory = benchmark(sizes, args.repeats, args.warmup)
    text = report(units, checks, memory, sizes, args, time.perf_counter() - started)
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
