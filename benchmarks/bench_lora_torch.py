"""peftplug's LoRA against HF PEFT's on PyTorch (CPU), in one process.

Both libraries wrap identical copies of a Llama-shaped ``LlamaForCausalLM`` with the same LoRA
weights (B made nonzero, so that both do the whole computation; logits and gradients are checked
equal first). The timed runs are interleaved in rounds, one run of each side per round, the order
rotated every round, with garbage collection and a pause before each run (longer while other
processes hold the CPUs: the machine is shared). The table gives each side's median and the
median over rounds of the within-round ratio, which is what the targets judge. Operations:

- (a) training step: forward with labels, backward, ``AdamW.step``, ``zero_grad``;
- (b) unmerged inference: a forward under ``torch.inference_mode``, and under ``torch.no_grad``;
- (c) merged inference: the model ``merge_and_unload`` returns, against the plain base model;
- (d) ``get_peft_model`` on a Llama-2-7B-shaped model built on the meta device (224 modules).

``python benchmarks/bench_lora_torch.py`` runs everything at full size (8-10 min on 2 shared
cores) and writes the table to ``benchmarks/results/lora_torch.md`` (every run's time to
``lora_torch.json``); ``--quick`` is a smoke run on small models (about a minute), ``--only``
picks parts, ``--repeats`` sets the rounds.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rounds import round_order

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RESULTS = Path(__file__).resolve().parent / "results" / "lora_torch.md"
PARTS = ("training", "inference", "merged", "meta")


@dataclass
class Sizes:
    """Model and batch shapes of one benchmark run."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    batch: int
    tokens: int
    meta_hidden: int
    meta_intermediate: int
    meta_layers: int
    meta_heads: int


FULL = Sizes(1024, 2816, 4, 16, 32000, 4, 128, 4096, 11008, 32, 32)
QUICK = Sizes(128, 352, 2, 4, 1000, 2, 32, 512, 1376, 4, 8)


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes have run, CPU seconds this one has run) so far; None where
    ``/proc/stat`` is missing (not Linux). Their difference over an interval is the CPU time
    other processes took from this benchmark."""
    try:
        with open("/proc/stat") as stat:
            fields = [float(value) for value in stat.readline().split()[1:9]]
    except OSError:
        return None
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_cores(before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float) -> float:
    """Cores other processes kept busy between two :func:`cpu_seconds` readings (0 if unknown)."""
    if before is None or after is None or seconds <= 0:
        return 0.0
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds)


@dataclass
class Quiet:
    """The pause before each timed run, made to wait out other work on the shared machine.

    At least ``pause`` seconds; then on, in ``pause``-long windows, while other processes keep
    more than ``threshold`` cores busy or a fixed matrix product (the probe) runs more than
    ``slack`` times slower than its best so far, for at most ``max_wait`` seconds in all. The probe
    catches what the process table cannot show: other virtual machines on the same host, which
    here slowed every run by up to 2x for minutes at a time.
    """

    pause: float = 0.2
    max_wait: float = 5.0
    threshold: float = 0.3
    slack: float = 1.15
    best_probe: float = float("inf")
    _probe_operands: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def probe(self) -> float:
        """Seconds for the fastest of three products of [256, 1024] by [1024, 1024] (~10 ms)."""
        if self._probe_operands is None:
            generator = torch.Generator().manual_seed(3)
            self._probe_operands = (
                torch.randn(256, 1024, generator=generator),
                torch.randn(1024, 1024, generator=generator),
            )
        first, second = self._probe_operands
        fastest = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            torch.mm(first, second)
            fastest = min(fastest, time.perf_counter() - start)
        self.best_probe = min(self.best_probe, fastest)
        return fastest

    def wait(self) -> float:
        """Sleep until the machine is quiet, or ``max_wait`` has passed. Returns the last
        probe's time over the best probe time (1.0: the CPUs run at full speed)."""
        waited = 0.0
        while True:
            before, start = cpu_seconds(), time.perf_counter()
            time.sleep(self.pause)
            others = others_cores(before, cpu_seconds(), time.perf_counter() - start)
            slowdown = self.probe() / self.best_probe
            waited += time.perf_counter() - start
            if (others <= self.threshold and slowdown <= self.slack) or waited >= self.max_wait:
                return slowdown


@dataclass
class Unit:
    """One timed operation: ``run(setup())``, with only ``run`` timed."""

    label: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    seconds: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    slowdowns: list[float] = field(default_factory=list)

    def once(self, quiet: Quiet | None) -> float:
        """Prepare, collect garbage, wait for a quiet machine, then time one run (with the
        collector off, as timeit does). Records the time and the cores other processes used."""
        argument = self.setup()
        gc.collect()
        if quiet is not None:
            self.slowdowns.append(quiet.wait())
        gc.disable()
        try:
            before = cpu_seconds()
            start = time.perf_counter()
            self.run(argument)
            elapsed = time.perf_counter() - start
            self.others.append(others_cores(before, cpu_seconds(), elapsed))
        finally:
            gc.enable()
        del argument
        return elapsed

    @property
    def median_ms(self) -> float:
        """Median of the timed runs, in milliseconds."""
        return 1000 * statistics.median(self.seconds)

    def paired_ratio(self, other: Unit) -> float:
        """Median over rounds of this unit's time divided by ``other``'s in the same round."""
        return statistics.median(a / b for a, b in zip(self.seconds, other.seconds))


def interleave(units: list[Unit], repeats: int, warmup: int, quiet: Quiet, reference: int = 1) -> None:
    """Run ``units`` round after round (warm-up rounds untimed), in :func:`round_order`; each
    unit's times go to ``unit.seconds``. The summary printed also gives each unit's median
    per-round ratio to ``units[reference]``."""
    for _ in range(warmup):
        for unit in units:
            unit.once(None)
            unit.others.clear()
    quiet.probe()  # a yardstick before the first timed run
    for round_index in range(repeats):
        for unit in round_order(units, round_index):
            unit.seconds.append(unit.once(quiet))
    for unit in units:
        times = sorted(1000 * s for s in unit.seconds)
        print(
            f"    {unit.label:<16} median {unit.median_ms:9.2f} ms  min {times[0]:9.2f}  max {times[-1]:9.2f}  "
            f"n={len(times)}  per-round ratio to {units[reference].label} {unit.paired_ratio(units[reference]):.3f}  "
            f"other processes' cores while timed: median {statistics.median(unit.others):.2f}, "
            f"probe slowdown before: median {statistics.median(unit.slowdowns):.2f}",
            flush=True,
        )


def llama(sizes: Sizes, meta: bool = False):
    """A ``LlamaForCausalLM`` with random weights (or on the meta device), untied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if meta:
        config = LlamaConfig(
            hidden_size=sizes.meta_hidden,
            intermediate_size=sizes.meta_intermediate,
            num_hidden_layers=sizes.meta_layers,
            num_attention_heads=sizes.meta_heads,
            num_key_value_heads=sizes.meta_heads,
            vocab_size=32000,
            tie_word_embeddings=False,
        )
        with torch.device("meta"):
            return LlamaForCausalLM(config)
    config = LlamaConfig(
        hidden_size=sizes.hidden,
        intermediate_size=sizes.intermediate,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        num_key_value_heads=sizes.heads,
        vocab_size=sizes.vocab,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def lora_configs():
    """The same LoRA config for both libraries: r=16, alpha=32, dropout 0, all 7 linear kinds."""
    import peft

    import peftplug

    options = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    return peftplug.LoraConfig(**options), peft.LoraConfig(**options)


def share_lora_weights(source, destination) -> int:
    """Give ``source`` (HF PEFT) a nonzero B and copy every LoRA tensor into ``destination``
    (peftplug) under the same parameter name. Returns the number of tensors copied."""
    generator = torch.Generator().manual_seed(1)
    wanted = dict(destination.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, parameter in source.named_parameters():
            if "lora_" not in name:
                continue
            if ".lora_B." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
            wanted[name].copy_(parameter)
            copied += 1
    lora_names = {name for name in wanted if "lora_" in name}
    if copied != len(lora_names):
        raise RuntimeError(f"copied {copied} LoRA tensors, peftplug has {len(lora_names)}")
    return copied


def max_logit_difference(first, second, input_ids: torch.Tensor) -> float:
    """Largest absolute difference between two models' logits on ``input_ids``."""
    with torch.inference_mode():
        return (first(input_ids=input_ids).logits - second(input_ids=input_ids).logits).abs().max().item()


def max_gradient_difference(plug, ref, input_ids: torch.Tensor) -> float:
    """Largest absolute difference between the two models' LoRA gradients after one backward
    of the language-model loss on ``input_ids`` (gradients are dropped afterwards)."""
    for model in (plug, ref):
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    gradients = {name: p.grad for name, p in ref.named_parameters() if p.grad is not None}
    difference = max(
        (p.grad - gradients[name]).abs().max().item() for name, p in plug.named_parameters() if p.grad is not None
    )
    for model in (plug, ref):
        model.zero_grad(set_to_none=True)
    return difference


def training_step(model, optimizer, input_ids: torch.Tensor) -> Callable[[Any], None]:
    """A unit body: forward with labels, backward, AdamW step, gradients dropped."""

    def run(_: Any) -> None:
        """One training step."""
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def inference(model, input_ids: torch.Tensor, context: Callable[[], Any]) -> Callable[[Any], None]:
    """A unit body: one forward of ``model`` under ``context`` (inference_mode or no_grad)."""

    def run(_: Any) -> None:
        """One forward."""
        with context():
            model(input_ids=input_ids)

    return run


@dataclass
class Row:
    """One line of the results table: ``subject`` against ``reference``, ``base`` for scale."""

    operation: str
    subject: Unit
    reference: Unit
    base: Unit | None
    target: str
    check: Callable[[float], bool]
    extra_check: Callable[[Row], bool] = lambda row: True

    @property
    def ratio_of_medians(self) -> float:
        """Median of the subject over median of the reference."""
        return self.subject.median_ms / self.reference.median_ms

    @property
    def ratio(self) -> float:
        """Median over rounds of subject / reference within the round: the judged ratio. The two
        runs of a round are seconds apart, so load that drifts over minutes on this shared
        machine cancels out of it, where it does not out of the ratio of medians."""
        return self.subject.paired_ratio(self.reference)

    @property
    def ok(self) -> bool:
        """The target met (on :attr:`ratio`)."""
        return self.check(self.ratio) and self.extra_check(self)

    @property
    def others(self) -> float:
        """Median cores that other processes kept busy while this row's units were timed."""
        return statistics.median(self.subject.others + self.reference.others)

    @property
    def slowdown(self) -> float:
        """Median probe slowdown just before this row's timed runs (1.0: full speed)."""
        return statistics.median(self.subject.slowdowns + self.reference.slowdowns)


def at_most(limit: float) -> Callable[[float], bool]:
    """A check: ratio <= ``limit``."""
    return lambda ratio: ratio <= limit


def benchmark_models(sizes: Sizes, repeats: int, warmup: int, quiet: Quiet, parts: set[str]) -> list[Row]:
    """The rows of ``parts`` (training, inference, merged) on the small Llama."""
    import peft

    import peftplug

    torch.manual_seed(0)
    base = llama(sizes)
    plug_base, peft_base = copy.deepcopy(base), copy.deepcopy(base)
    plug_config, peft_config = lora_configs()
    plug = peftplug.get_peft_model(plug_base, plug_config)
    ref = peft.get_peft_model(peft_base, peft_config)
    copied = share_lora_weights(ref, plug)
    input_ids = torch.randint(0, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(2))
    for model in (plug, ref, base):
        model.eval()
    difference = max_logit_difference(plug, ref, input_ids)
    print(f"  {copied} LoRA tensors shared; max |logits(peftplug) - logits(peft)| = {difference:.2e}", flush=True)
    if difference > 1e-5:
        raise SystemExit(f"peftplug and peft disagree: logits differ by {difference:.3e} (> 1e-5)")
    lora_delta = max_logit_difference(plug, base, input_ids)
    print(f"  max |logits(LoRA) - logits(base)| = {lora_delta:.2e} (nonzero: B is not zero)", flush=True)
    gradient_difference = max_gradient_difference(plug, ref, input_ids)
    print(f"  max |LoRA gradient(peftplug) - gradient(peft)| = {gradient_difference:.2e}", flush=True)
    if gradient_difference > 1e-5:
        raise SystemExit(f"peftplug and peft gradients differ by {gradient_difference:.3e} (> 1e-5)")

    rows: list[Row] = []
    if "training" in parts:
        print("  training step (forward + backward + AdamW step)", flush=True)
        for model in (plug, ref):
            model.train()
        plug_optimizer = torch.optim.AdamW([p for p in plug.parameters() if p.requires_grad], lr=1e-4)
        peft_optimizer = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-4)
        units = [
            Unit("peftplug", training_step(plug, plug_optimizer, input_ids)),
            Unit("peft", training_step(ref, peft_optimizer, input_ids)),
        ]
        interleave(units, repeats, warmup, quiet)
        rows.append(
            Row(
                "(a) training step: forward + backward + AdamW",
                units[0],
                units[1],
                None,
                "peftplug/peft <= 1.00",
                at_most(1.00),
            )
        )
        del plug_optimizer, peft_optimizer
        # The steps moved both adapters by (nearly) the same updates; make them identical again.
        share_lora_weights(ref, plug)
        for model in (plug, ref):
            model.eval()

    for context, label in ((torch.inference_mode, "inference_mode"), (torch.no_grad, "no_grad")):
        if "inference" not in parts:
            break
        print(f"  unmerged inference ({label})", flush=True)
        units = [
            Unit("peftplug", inference(plug, input_ids, context)),
            Unit("peft", inference(ref, input_ids, context)),
        ]
        if context is torch.inference_mode:  # the base model once, for scale
            units.append(Unit("base model", inference(base, input_ids, context)))
        interleave(units, repeats, warmup, quiet)
        rows.append(
            Row(
                f"(b) unmerged inference, {label} forward",
                units[0],
                units[1],
                units[2] if len(units) > 2 else None,
                "peftplug/peft <= 1.00",
                at_most(1.00),
            )
        )

    if "merged" not in parts:
        return rows
    print("  merged inference (merge_and_unload), inference_mode forward", flush=True)
    with torch.inference_mode():
        unmerged_logits = plug(input_ids=input_ids).logits
    plug_merged = plug.merge_and_unload()
    ref_merged = ref.merge_and_unload()
    merge_difference = max_logit_difference(plug_merged, ref_merged, input_ids)
    with torch.inference_mode():
        merged_vs_unmerged = (plug_merged(input_ids=input_ids).logits - unmerged_logits).abs().max().item()
    print(
        f"  max |merged peftplug - merged peft| = {merge_difference:.2e}; "
        f"|merged - unmerged peftplug| = {merged_vs_unmerged:.2e}; merged type: "
        f"{type(plug_merged.model.layers[0].self_attn.q_proj).__name__}",
        flush=True,
    )
    units = [
        Unit("peftplug merged", inference(plug_merged, input_ids, torch.inference_mode)),
        Unit("base model", inference(base, input_ids, torch.inference_mode)),
    ]
    interleave(units, repeats, warmup, quiet)
    rows.append(
        Row(
            "(c) merged inference (merge_and_unload), inference_mode forward, against the base model",
            units[0],
            units[1],
            None,
            "peftplug merged/base in 0.97-1.03",
            lambda ratio: 0.97 <= ratio <= 1.03,
        )
    )
    return rows


def benchmark_meta_injection(sizes: Sizes, repeats: int, warmup: int, quiet: Quiet) -> Row:
    """``get_peft_model`` on a fresh meta-device Llama for each run (the build is not timed)."""
    import peft

    import peftplug

    plug_config, peft_config = lora_configs()
    print(
        f"  get_peft_model on meta Llama (hidden {sizes.meta_hidden}, {sizes.meta_layers} layers, "
        f"{7 * sizes.meta_layers} target modules)",
        flush=True,
    )
    plug_check = peftplug.get_peft_model(llama(sizes, meta=True), plug_config)
    peft_check = peft.get_peft_model(llama(sizes, meta=True), peft_config)
    counts = plug_check.get_nb_trainable_parameters(), peft_check.get_nb_trainable_parameters()
    print(f"  (trainable, all) parameters: peftplug {counts[0]}, peft {counts[1]}", flush=True)
    if counts[0] != counts[1]:
        raise SystemExit("peftplug and peft count different parameters on the meta model")
    if any(p.device.type != "meta" for p in plug_check.parameters()):
        raise SystemExit("peftplug allocated parameters off the meta device")
    del plug_check, peft_check
    units = [
        Unit("peftplug", lambda model: peftplug.get_peft_model(model, plug_config), lambda: llama(sizes, meta=True)),
        Unit("peft", lambda model: peft.get_peft_model(model, peft_config), lambda: llama(sizes, meta=True)),
    ]
    interleave(units, repeats, warmup, quiet)
    return Row(
        f"(d) get_peft_model, {7 * sizes.meta_layers} modules of a meta-device "
        f"{sizes.meta_hidden}-hidden {sizes.meta_layers}-layer Llama",
        units[0],
        units[1],
        None,
        "peftplug/peft <= 1.0 and peftplug < 500 ms",
        at_most(1.0),
        lambda row: row.subject.median_ms < 500,
    )


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""

    def ms(unit: Unit | None) -> str:
        """The unit's median, or a dash."""
        return "—" if unit is None else f"{unit.median_ms:.1f}"

    lines = [
        "| operation | peftplug ms | peft ms | base model ms | ratio (median per round) | ratio of medians | target | ok |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        peft_unit, base_unit = row.reference, row.base
        if row.reference.label == "base model":  # the merged row: peftplug's merged model against the base
            peft_unit, base_unit = None, row.reference
        lines.append(
            f"| {row.operation} | {ms(row.subject)} | {ms(peft_unit)} | {ms(base_unit)} | {row.ratio:.3f} | "
            f"{row.ratio_of_medians:.3f} | {row.target} | {'yes' if row.ok else 'NO'} |"
        )
    return "\n".join(lines)


def report(rows: list[Row], sizes: Sizes, args: argparse.Namespace, seconds: float) -> str:
    """The results file: settings, the table, and how to read it."""
    import peft
    import transformers

    command = "python benchmarks/bench_lora_torch.py " + " ".join(sys.argv[1:])
    others = ", ".join(f"{row.operation[:3]} {row.others:.2f}" for row in rows)
    slowdowns = ", ".join(f"{row.operation[:3]} {row.slowdown:.2f}" for row in rows)
    return "\n".join(
        [
            "# peftplug LoRA vs HF PEFT (PyTorch, CPU)",
            "",
            f"`{command.strip()}` — {datetime.datetime.now():%Y-%m-%d %H:%M}, {seconds:.0f} s in all.",
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} threads "
            f"(`torch.set_num_threads`), {os.cpu_count()} CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"{sizes.heads} heads, vocab {sizes.vocab}, untied embeddings; batch {sizes.batch} x {sizes.tokens} "
            f"tokens. LoRA r=16, alpha 32, dropout 0 on {', '.join(TARGETS)}; identical weights in both "
            "libraries, B nonzero.",
            f"{args.repeats} rounds, after {args.warmup} untimed ones; each round times one run of each "
            "side, in alternating order. Before each run: garbage collection, a "
            f"{args.pause:g} s pause, prolonged (at most {args.max_wait:g} s) while other processes keep the "
            "CPUs busy or a probe (a fixed matrix product) runs slow. ms: median run. ratio: the median over rounds of peftplug's time / peft's time in "
            "the same round (merged row: peftplug's merged model / the plain base model); this is the "
            "judged one, as load drifting over minutes on this shared machine cancels out of it. The ratio "
            "of the medians is shown beside it.",
            f"Cores other processes kept busy during the timed runs (median per row): {others}; "
            "above ~0.3 the machine was shared while measuring, and times are inflated and noisy. "
            f"The probe's slowdown just before the timed runs (median per row): {slowdowns}; above "
            "~1.15 the host was shared (other virtual machines) even where no process here was busy.",
            "",
            table(rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every benchmark, print the table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20; 5 with --quick)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first (default 2)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds to pause before each timed run (0.2)")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=5.0,
        help="longest pause (s) waiting for a quiet machine before a run (5; 0: never wait)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="small models, few repeats: a smoke test")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)"
    )
    parser.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="also write every timed run (JSON) here (default: next to the results file)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help=f"results file (default {RESULTS}; none with --quick)"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 20
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    quiet = Quiet(pause=args.pause, max_wait=max(args.max_wait, args.pause))
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    if not parts or parts - set(PARTS):
        parser.error(f"--only takes a comma-separated list of {', '.join(PARTS)}; got {args.only!r}")
    started = time.perf_counter()
    rows: list[Row] = []
    if parts & {"training", "inference", "merged"}:
        rows += benchmark_models(sizes, args.repeats, args.warmup, quiet, parts)
        gc.collect()
    if "meta" in parts:
        rows.append(benchmark_meta_injection(sizes, args.repeats, args.warmup, quiet))
    text = report(rows, sizes, args, time.perf_counter() - started)
    print()
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"written to {output}")
    raw = args.raw or (output.with_suffix(".json") if output is not None else None)
    if raw is not None:
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(raw_times(rows), indent=1))
        print(f"every timed run in {raw}")
    return 0 if all(row.ok for row in rows) else 1


def raw_times(rows: list[Row]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Every run of every row: seconds, and the cores other processes used meanwhile, by unit."""
    return {
        row.operation: {
            unit.label: {
                "seconds": unit.seconds,
                "other_processes_cores": unit.others,
                "probe_slowdown_before": unit.slowdowns,
            }
            for unit in (row.subject, row.reference, row.base)
            if unit is not None
        }
        for row in rows
    }


if __name__ == "__main__":
    raise SystemExit(main())
