"""Mixed batches: 8 LoRA adapters, 32 rows spread over them, peftplug against HF PEFT (PyTorch, CPU).

One Llama-shaped model per side with the same 8 LoRA adapters (r=16 on all 7 linear kinds, B
nonzero, weights copied from HF PEFT's into peftplug's; logits checked equal first). Timed:
a forward of the 32-row batch with ``adapter_names=`` (4 rows per adapter), and ``generate``
(greedy, ``max_new_tokens`` new tokens) of the same; beside them, peftplug's forward and
generate of the same batch with one adapter (the bar: a mixed batch within 1.2x of it), and an
A/A control (a second HF PEFT model with the same weights). Runs interleaved in rounds with
the order rotated each round; ratios are medians of per-round ratios.

Timing is backed by counting: the operator calls of one mixed forward on each side (torch's
profiler), since a loop over adapters shows there as calls per layer.

``python benchmarks/bench_mixed_batch_torch.py`` writes
``benchmarks/results/mixed_batch_torch.md``; ``--quick`` is a small smoke run.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import heading, parser_for, publish  # noqa: E402
from bench_lora_torch import TARGETS, Quiet, Sizes, Unit, interleave, llama  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "mixed_batch_torch.md"
FULL = Sizes(512, 1408, 4, 8, 8000, 32, 64, 0, 0, 0, 0)
QUICK = Sizes(64, 176, 2, 4, 500, 32, 16, 0, 0, 0, 0)
ADAPTERS = [f"adapter{i}" for i in range(8)]


def models(sizes: Sizes):
    """peftplug's, HF PEFT's and the A/A control's models, each with the same 8 adapters."""
    import peft

    import peftplug

    options = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    built = []
    for library in (peftplug, peft, peft):
        torch.manual_seed(0)
        model = library.get_peft_model(llama(sizes), library.LoraConfig(**options), adapter_name=ADAPTERS[0])
        for name in ADAPTERS[1:]:
            model.add_adapter(name, library.LoraConfig(**options))
        built.append(model.eval())
    generator = torch.Generator().manual_seed(1)
    reference = dict(built[1].named_parameters())
    with torch.no_grad():
        for name, parameter in reference.items():
            if ".lora_B." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        for other in (built[0], built[2]):
            for name, parameter in other.named_parameters():
                if "lora_" in name:
                    parameter.copy_(reference[name])
    return built


def operator_calls(function) -> int:
    """The number of aten operator calls ``function`` makes (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        function()
    return sum(1 for event in recorded.events() if event.name.startswith("aten::"))


def benchmark(sizes: Sizes, repeats: int, warmup: int, new_tokens: int):
    """The timed units (forward and generate of each side), the checks and the counts."""
    ours, theirs, control = models(sizes)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=generator)
    names = [ADAPTERS[row % len(ADAPTERS)] for row in range(sizes.batch)]
    settings = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0, "min_new_tokens": new_tokens}
    ours.set_adapter(ADAPTERS[0])

    def forward(model, mixed: bool):
        def run(_):
            with torch.no_grad():
                return model(input_ids=ids, adapter_names=names) if mixed else model(input_ids=ids)

        return run

    def generate(model, mixed: bool):
        def run(_):
            with torch.no_grad():
                extra = {"adapter_names": names} if mixed else {}
                return model.generate(input_ids=ids, **extra, **settings)

        return run

    with torch.no_grad():
        difference = (forward(ours, True)(None).logits - forward(theirs, True)(None).logits).abs().max().item()
        same_tokens = torch.equal(generate(ours, True)(None), generate(theirs, True)(None))
    checks = [
        f"largest logit difference of the mixed forward, peftplug - peft: {difference:.2e}",
        f"generated tokens of the mixed batch equal: {same_tokens}",
    ]
    counts = {
        "peftplug": operator_calls(lambda: forward(ours, True)(None)),
        "peft": operator_calls(lambda: forward(theirs, True)(None)),
        "peftplug, one adapter": operator_calls(lambda: forward(ours, False)(None)),
    }
    forward_units = [
        Unit("peftplug mixed", forward(ours, True)),
        Unit("peft mixed", forward(theirs, True)),
        Unit("peft mixed (A/A)", forward(control, True)),
        Unit("peftplug one adapter", forward(ours, False)),
    ]
    generate_units = [
        Unit("peftplug mixed", generate(ours, True)),
        Unit("peft mixed", generate(theirs, True)),
        Unit("peft mixed (A/A)", generate(control, True)),
        Unit("peftplug one adapter", generate(ours, False)),
    ]
    interleave(forward_units, repeats, warmup, Quiet())
    interleave(generate_units, repeats, warmup, Quiet())
    return forward_units, generate_units, checks, counts


def rows(units: list[Unit], tokens: int, what: str) -> list[str]:
    """Table rows of one operation: throughput against HF PEFT and against one adapter."""
    ours, theirs, control, single = units
    speedup = 1 / ours.paired_ratio(theirs)
    to_single = ours.paired_ratio(single)
    return [
        f"| {what} | {ours.median_ms:.1f} | {theirs.median_ms:.1f} | {speedup:.2f}x "
        f"({'met' if speedup >= 1.3 else 'not met'}, >= 1.3x) | {control.paired_ratio(theirs):.3f} "
        f"| {single.median_ms:.1f} | {to_single:.3f} ({'met' if to_single <= 1.2 else 'not met'}, <= 1.2) |"
    ]


def report(forward_units, generate_units, checks, counts, sizes: Sizes, args, started: float) -> str:
    """The results file: settings, the tables, the checks."""
    import peft
    import transformers

    return "\n".join(
        [
            "# Mixed batches: 8 LoRA adapters in one batch, peftplug vs HF PEFT (PyTorch, CPU)",
            "",
            heading("bench_mixed_batch_torch.py", started),
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"{sizes.heads} heads, vocab {sizes.vocab}; {sizes.batch} rows x {sizes.tokens} tokens, "
            f"{len(ADAPTERS)} LoRA adapters (r=16, all 7 linear kinds), {sizes.batch // len(ADAPTERS)} rows "
            f"each; generate: greedy, {args.new_tokens} new tokens. {args.repeats} rounds after "
            f"{args.warmup} untimed ones, the order rotated each round.",
            "",
            "| operation | peftplug ms | peft ms | throughput vs peft | A/A: peft copy / peft "
            "| peftplug one adapter ms | mixed / one adapter |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows(forward_units, sizes.tokens, "forward, adapter_names="),
            *rows(generate_units, sizes.tokens, "generate, adapter_names="),
            "",
            "| aten operator calls in one mixed forward | peftplug | peft | peftplug, one adapter |",
            "|---|---:|---:|---:|",
            f"| calls | {counts['peftplug']} | {counts['peft']} | {counts['peftplug, one adapter']} |",
            "",
            *[f"- {check}" for check in checks],
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the tables and write the results file."""
    parser = parser_for(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--new-tokens", type=int, default=8, help="tokens generate adds per row")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 8)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    forward_units, generate_units, checks, counts = benchmark(sizes, args.repeats, args.warmup, args.new_tokens)
    return publish(report(forward_units, generate_units, checks, counts, sizes, args, started), args, RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
