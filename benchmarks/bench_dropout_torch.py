"""What LoRA dropout costs a training step: peftplug against HF PEFT (PyTorch, CPU).

Four models of one Llama-shaped base, LoRA r=16 on all 7 linear kinds with identical weights:
peftplug and HF PEFT each with ``lora_dropout`` 0.05 and with 0. One training step (forward with
labels, backward, AdamW) per timed run, runs interleaved in rounds with the order rotated each
round; the judged figure is each library's median per-round ratio of its dropout step to its
dropout-0 step (target: peftplug <= 1.08), with peftplug's dropout-0 step against HF PEFT's as
a cross-check and a second peftplug dropout-0 model as the A/A control.

Counted beside the times, for one step's dropout alone: the elements masked, the random
draws made (torch's ``nn.Dropout`` one per element; peftplug's one 64-bit draw per four), and
the milliseconds of each library's dropout modules over the step's forward (torch's profiler).

``python benchmarks/bench_dropout_torch.py`` writes ``benchmarks/results/dropout_torch.md``;
``--quick`` is a small smoke run.
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
from bench_lora_torch import FULL, QUICK, TARGETS, Quiet, Sizes, Unit, interleave, llama, training_step  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dropout_torch.md"
DROPOUT = 0.05


def models(sizes: Sizes):
    """{label: model}: each library with dropout 0.05 and 0, and peftplug's A/A copy; one base,
    identical LoRA weights (B nonzero), training mode."""
    import peft

    import peftplug

    torch.manual_seed(0)
    base = llama(sizes)
    state = base.state_dict()
    built = {}
    for label, library, dropout in (
        ("peft dropout", peft, DROPOUT),
        ("peft no dropout", peft, 0.0),
        ("peftplug dropout", peftplug, DROPOUT),
        ("peftplug no dropout", peftplug, 0.0),
        ("peftplug no dropout (A/A)", peftplug, 0.0),
    ):
        model = llama(sizes)
        model.load_state_dict(state)
        config = library.LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules=TARGETS)
        built[label] = library.get_peft_model(model, config).train()
    generator = torch.Generator().manual_seed(1)
    source = dict(built["peft dropout"].named_parameters())
    with torch.no_grad():
        for name, parameter in source.items():
            if ".lora_B." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        for model in built.values():
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(source[name])
    return built


def dropout_work(model, input_ids: torch.Tensor) -> dict[str, float]:
    """Elements masked in one forward, and the milliseconds the dropout modules took."""
    from torch.profiler import ProfilerActivity, profile, record_function

    elements = [0]
    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:

            def around(module, args, elements=elements):
                elements[0] += args[0].numel()

            handles.append(module.register_forward_pre_hook(around))
            forward = module.forward

            def timed(x, forward=forward):
                with record_function("lora_dropout"):
                    return forward(x)

            module.forward = timed
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    model.zero_grad(set_to_none=True)
    for handle in handles:
        handle.remove()
    for module in model.modules():
        module.__dict__.pop("forward", None)
    milliseconds = sum(e.cpu_time_total for e in recorded.key_averages() if e.key == "lora_dropout") / 1e3
    return {"elements": elements[0], "ms": milliseconds}


def benchmark(sizes: Sizes, repeats: int, warmup: int):
    """The timed units and the counted work."""
    built = models(sizes)
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(2))
    work = {label: dropout_work(built[label], input_ids) for label in ("peftplug dropout", "peft dropout")}
    units = []
    for label, model in built.items():
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        units.append(Unit(label, training_step(model, optimizer, input_ids)))
    interleave(units, repeats, warmup, Quiet())
    return {unit.label: unit for unit in units}, work


def report(units: dict[str, Unit], work: dict, sizes: Sizes, args, started: float) -> str:
    """The results file."""
    import peft
    import transformers

    ours = units["peftplug dropout"].paired_ratio(units["peftplug no dropout"])
    theirs = units["peft dropout"].paired_ratio(units["peft no dropout"])
    control = units["peftplug no dropout (A/A)"].paired_ratio(units["peftplug no dropout"])
    cross = units["peftplug no dropout"].paired_ratio(units["peft no dropout"])
    elements = work["peftplug dropout"]["elements"]
    return "\n".join(
        [
            "# LoRA dropout in a training step: peftplug vs HF PEFT (PyTorch, CPU)",
            "",
            heading("bench_dropout_torch.py", started),
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"{sizes.heads} heads, vocab {sizes.vocab}; batch {sizes.batch} x {sizes.tokens} tokens. LoRA r=16, "
            f"alpha 32 on {', '.join(TARGETS)}, identical weights; dropout {DROPOUT} against 0. "
            f"{args.repeats} rounds after {args.warmup} untimed ones, the order rotated each round.",
            "",
            "| training step (forward + backward + AdamW) | dropout ms | no dropout ms | dropout / no dropout "
            "(median per round) | target |",
            "|---|---:|---:|---:|---|",
            f"| peftplug | {units['peftplug dropout'].median_ms:.1f} | {units['peftplug no dropout'].median_ms:.1f} "
            f"| {ours:.3f} | <= 1.08 ({'met' if ours <= 1.08 else 'not met'}) |",
            f"| HF PEFT | {units['peft dropout'].median_ms:.1f} | {units['peft no dropout'].median_ms:.1f} "
            f"| {theirs:.3f} | |",
            "",
            f"- A/A control (a second peftplug dropout-0 model / the first): {control:.3f}",
            f"- peftplug / HF PEFT, dropout-0 steps: {cross:.3f}",
            "",
            "| dropout in one step's forward (counted) | peftplug | HF PEFT |",
            "|---|---:|---:|",
            f"| elements masked | {elements:,} | {work['peft dropout']['elements']:,} |",
            f"| random draws | {(elements + 3) // 4:,} (64-bit, 4 elements each) | {elements:,} (one per element) |",
            f"| ms in the dropout modules (profiler) | {work['peftplug dropout']['ms']:.1f} "
            f"| {work['peft dropout']['ms']:.1f} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the tables and write the results file."""
    parser = parser_for(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 10)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    units, work = benchmark(sizes, args.repeats, args.warmup)
    return publish(report(units, work, sizes, args, started), args, RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
