"""peftplug's IA3, prompt tuning, P-tuning and prefix tuning against HF PEFT's (PyTorch, CPU).

Same model, batch and measuring discipline as ``bench_lora_torch.py`` (whose machinery this
reuses): a Llama-shaped model wrapped by both libraries, the wrapped models sharing their
frozen weights (the same tensors) and holding equal adapter weights, 20 virtual tokens for the
prompt methods, one training step (forward with labels, backward, AdamW) per timed run, runs
interleaved in rounds, medians and the median per-round ratio with a bootstrap interval. A
second peft model in the same rounds is the A/A control: its ratio to the first shows how far
noise alone moves the judged ratio. One more row compares peftplug's prefix-tuning step with
its own LoRA step (r=16 on all linear layers).

``python benchmarks/bench_methods_torch.py`` writes ``benchmarks/results/methods_torch.md``;
``--quick`` is a small smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lora_torch import (  # noqa: E402
    FULL,
    QUICK,
    Quiet,
    Row,
    Unit,
    at_most,
    interleave,
    llama,
    lora_configs,
    training_step,
)

RESULTS = Path(__file__).resolve().parent / "results" / "methods_torch.md"
VIRTUAL_TOKENS = 20


def method_configs(name: str):
    """(peftplug config, peft config) of ``name``, with the same fields."""
    import peft

    import peftplug

    fields = {"task_type": "CAUSAL_LM"}
    if name == "ia3":
        return peftplug.IA3Config(**fields), peft.IA3Config(**fields)
    fields["num_virtual_tokens"] = VIRTUAL_TOKENS
    if name == "prompt tuning":
        return peftplug.PromptTuningConfig(**fields), peft.PromptTuningConfig(**fields)
    if name == "p-tuning (MLP)":
        fields.update(encoder_reparameterization_type="MLP", encoder_hidden_size=128)
        return peftplug.PromptEncoderConfig(**fields), peft.PromptEncoderConfig(**fields)
    if name == "prefix tuning":
        return peftplug.PrefixTuningConfig(**fields), peft.PrefixTuningConfig(**fields)
    raise ValueError(name)


def share_trainable_weights(source, destination) -> int:
    """Copy every trainable tensor of ``source`` into ``destination`` under the same name; an
    error when a name or shape has no counterpart, so both sides compute the same thing."""
    wanted = {name: p for name, p in destination.named_parameters() if p.requires_grad}
    copied = 0
    with torch.no_grad():
        for name, parameter in source.named_parameters():
            if not parameter.requires_grad:
                continue
            if name not in wanted or wanted[name].shape != parameter.shape:
                raise RuntimeError(
                    f"{type(destination).__name__} has no trainable tensor {name} of shape {list(parameter.shape)}"
                )
            wanted[name].copy_(parameter)
            copied += 1
    if copied != len(wanted):
        raise RuntimeError(f"copied {copied} trainable tensors, {type(destination).__name__} has {len(wanted)}")
    return copied


def share_frozen_weights(source, destination) -> None:
    """Make every frozen parameter of ``destination``'s base model the very tensor of
    ``source``'s under the same module name, so that the sides differ in their library's code
    alone, not in where their weights lie in memory; an error when a module or parameter has no
    counterpart."""
    modules = dict(source.get_base_model().named_modules())
    for name, module in destination.get_base_model().named_modules():
        for key, parameter in list(module._parameters.items()):
            if parameter is None or parameter.requires_grad:
                continue
            theirs = modules.get(name)
            if theirs is None or key not in theirs._parameters or theirs._parameters[key].shape != parameter.shape:
                raise RuntimeError(f"the reference has no frozen {name}.{key} of shape {list(parameter.shape)}")
            module._parameters[key] = theirs._parameters[key]


def paired_models(build, sizes):
    """peftplug's, peft's and a second peft model (the A/A control) of one method, from the
    (peftplug config, peft config) ``build()`` returns, in training mode: all three share the
    frozen weights, and hold equal trainable ones."""
    import peft

    import peftplug

    ours_config, theirs_config = build()
    torch.manual_seed(0)
    theirs = peft.get_peft_model(llama(sizes), theirs_config)
    control = peft.get_peft_model(llama(sizes), build()[1])
    ours = peftplug.get_peft_model(llama(sizes), ours_config)
    for other in (control, ours):
        share_frozen_weights(theirs, other)
        share_trainable_weights(theirs, other)
    gc.collect()  # the replaced frozen weights
    for model in (ours, theirs, control):
        model.train()
    return ours, theirs, control


def step_units(label: str, build, sizes, input_ids: torch.Tensor) -> tuple[Unit, Unit, Unit, float]:
    """The peftplug and peft training-step units of one method, a second peft unit (the A/A
    control: its ratio to the first is the noise floor of the judged ratio), and the loss
    difference between peftplug and peft (see :func:`paired_models`)."""
    ours, theirs, control = paired_models(build, sizes)
    with torch.no_grad():
        difference = abs(
            ours(input_ids=input_ids, labels=input_ids).loss.item()
            - theirs(input_ids=input_ids, labels=input_ids).loss.item()
        )
    units = []
    for side, model in (("peftplug", ours), ("peft", theirs), ("peft (A/A)", control)):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        units.append(Unit(f"{side} {label}", training_step(model, optimizer, input_ids)))
    return units[0], units[1], units[2], difference


METHODS = ("ia3", "prompt tuning", "p-tuning (MLP)", "prefix tuning")


def benchmark(
    sizes, repeats: int, warmup: int, quiet: Quiet, methods=METHODS
) -> tuple[list[Row], dict[str, Unit], list[str]]:
    """One row per method (peftplug / peft), then prefix / LoRA on peftplug; each method's A/A
    control unit by row; and check lines."""
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(0))
    rows, controls, checks, prefix_unit = [], {}, [], None
    for name in methods:
        print(f"{name}:", flush=True)
        ours, theirs, control, difference = step_units(name, lambda name=name: method_configs(name), sizes, input_ids)
        checks.append(f"{name}: |loss peftplug - loss peft| = {difference:.2e} on the same weights")
        interleave([ours, theirs, control], repeats, warmup, quiet)
        row = Row(f"training step, {name}", ours, theirs, None, "peftplug/peft <= 1.00", at_most(1.00))
        rows.append(row)
        controls[row.operation] = control
        if name == "prefix tuning":
            prefix_unit = ours
        del control, theirs
        gc.collect()
    if prefix_unit is None:
        return rows, controls, checks
    print("LoRA, for the prefix row:", flush=True)
    lora = step_units("lora", lora_configs, sizes, input_ids)[0]
    gc.collect()
    prefix_unit = Unit(prefix_unit.label, prefix_unit.run)  # fresh times, paired with LoRA's
    interleave([prefix_unit, lora], repeats, warmup, quiet)
    rows.append(
        Row(
            "training step, peftplug prefix / peftplug LoRA r=16 all linear",
            prefix_unit,
            lora,
            None,
            "prefix <= 1.1x LoRA",
            at_most(1.10),
        )
    )
    return rows, controls, checks


def ratio_interval(subject: Unit, reference: Unit, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the median per-round ratio (percentiles of the medians of
    ``resamples`` resamplings of the rounds, with a fixed seed)."""
    ratios = [a / b for a, b in zip(subject.seconds, reference.seconds)]
    generator = random.Random(seed)
    medians = sorted(statistics.median(generator.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def method_table(rows: list[Row], controls: dict[str, Unit]) -> str:
    """The rows as a markdown table, with the judged ratio's interval and the A/A control."""
    lines = [
        "| operation | peftplug ms | peft ms | ratio (median per round) | 95% interval | A/A: peft copy / peft "
        "| ratio of medians | target | ok |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for row in rows:
        low, high = ratio_interval(row.subject, row.reference)
        control = controls.get(row.operation)
        control_ratio = "—" if control is None else f"{control.paired_ratio(row.reference):.3f}"
        lines.append(
            f"| {row.operation} | {row.subject.median_ms:.1f} | {row.reference.median_ms:.1f} | {row.ratio:.3f} | "
            f"{low:.3f}–{high:.3f} | {control_ratio} | {row.ratio_of_medians:.3f} | {row.target} | "
            f"{'yes' if row.ok else 'NO'} |"
        )
    return "\n".join(lines)


def report(
    rows: list[Row], controls: dict[str, Unit], checks: list[str], sizes, args: argparse.Namespace, seconds: float
) -> str:
    """The results file: settings, the checks, the table."""
    import peft
    import transformers

    command = "python benchmarks/bench_methods_torch.py " + " ".join(sys.argv[1:])
    return "\n".join(
        [
            "# peftplug IA3 and prompt-learning methods vs HF PEFT (PyTorch, CPU)",
            "",
            f"`{command.strip()}` — {datetime.datetime.now():%Y-%m-%d %H:%M}, {seconds:.0f} s in all.",
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"{sizes.heads} heads, vocab {sizes.vocab}; batch {sizes.batch} x {sizes.tokens} tokens; "
            f"{VIRTUAL_TOKENS} virtual tokens; IA3 with the Llama defaults (k_proj, v_proj, down_proj). "
            f"{args.repeats} interleaved rounds after {args.warmup} untimed ones; ratio = median over rounds of the "
            "within-round ratio (see bench_lora_torch.py), with a 95% bootstrap interval over the rounds.",
            "Each method runs three models that share one set of frozen weights (the same tensors) and hold equal "
            "trainable ones: peftplug, peft, and a second peft model timed in the same rounds. That A/A column is "
            "the ratio a library gets against itself here: how far from 1.00 noise alone moves the judged ratio.",
            "",
            *[f"- {line}" for line in checks],
            "",
            method_table(rows, controls),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 12; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="small models, few repeats: a smoke test")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}")
    parser.add_argument(
        "--output", type=Path, default=None, help=f"results file (default {RESULTS}; none with --quick)"
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - set(METHODS):
        parser.error(f"--methods takes a comma-separated list of {', '.join(METHODS)}; got {args.methods!r}")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 12
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows, controls, checks = benchmark(sizes, args.repeats, args.warmup, Quiet(), methods)
    text = report(rows, controls, checks, sizes, args, time.perf_counter() - started)
    print()
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"written to {output}")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
