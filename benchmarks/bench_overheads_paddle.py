"""What LoRA adds to a frozen base on Paddle (CPU): peftplug against PaddleNLP's ``LoRAModel``,
timed and counted in one run.

The model is ``bench_lora_paddle.py``'s PaddleNLP Llama (hidden 1024, intermediate 2816, 4
layers, batch 4 x 128) with LoRA r=16, alpha 32, dropout 0 on all seven linear kinds, the same
weights in both libraries (B nonzero; logits and LoRA gradients checked equal first). The frozen
base is a third copy of the Llama with every parameter frozen and its input embeddings' output
taking a gradient, so that its backward runs through every layer; a fourth copy of it is the A/A
control (the same work against itself: what the shared machine alone moves a ratio by).

Timed, in interleaved rounds (``rounds.round_order``; before each run garbage collection and a
pause prolonged while the machine is busy), each ratio the median over rounds of the pair's
times in the same round:

1. training step (forward with labels, backward, AdamW, ``clear_grad``) / the frozen base's
   forward with labels and backward;
2. unmerged inference (forward under ``no_grad``, train mode: PaddleNLP merges in ``eval()``)
   / the frozen base's forward under ``no_grad``;
3. peak RSS (``ru_maxrss``) of a process that builds one model and runs 3 training steps, less
   the frozen base's (forward and backward), each in its own subprocess, started before this
   process builds its models (a child's ``ru_maxrss`` starts at its parent's RSS; the child's
   own ``VmHWM`` is checked to agree).

Counted (``paddle_work.py``: paddle's profiler for operator events and allocations, wrapped
matrix products for FLOPs, the host allocator's statistics for peak live bytes): one training
step of each library less one of the frozen base, both with the embeddings' output taking a
gradient, next to the analytic minimum (``paddle_work.lora_minimum``), per LoRA module with
``T`` tokens and ``h = x A``, ``y = x W + (s h) B``:

- FLOPs ``6 T r (in + out)``: forward ``x A`` ``[T, in] x [in, r]``, ``(s h) B``
  ``[T, r] x [r, out]``; backward ``dB``, ``d(s h)``, ``dA``, the ``dx`` contribution;
- operator calls 12: ``x A``, the scale, ``(s h) B``, the add and a backward node for each;
  the accumulation into ``A``'s and ``B``'s gradients; AdamW's update of each;
- bytes allocated, ``4 (4 T r + T (in + out) + r (in + out))``: ``h``, ``s h``, ``(s h) B``,
  ``d(s h)``, ``dh``, the ``dx`` contribution, ``dA``, ``dB`` (the add writes into the base's
  output and passes its gradient through);
- peak live bytes ``4 T r``: ``s h``, kept from the forward to the module's backward.

Inference is counted too: ``2 T r (in + out)`` FLOPs, 4 calls (``x A``, scale, ``(s h) B``,
add) and ``4 T (2 r + out)`` bytes per module; no adapter tensor outlives its module there, so
its peak live minimum is 0.

``python benchmarks/bench_overheads_paddle.py`` writes ``benchmarks/results/overheads_paddle.md``;
``--quick`` runs a small model and writes nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")  # Paddle's MKL is ~6x slower on these AMD CPUs without it
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import heading, parser_for, publish  # noqa: E402
from bench_lora_paddle import (  # noqa: E402
    FULL,
    QUICK,
    TARGETS,
    PaddleQuiet,
    Sizes,
    logits_of,
    lora_gradients,
    paddle_llama,
    wrap_both,
)
from bench_lora_torch import Unit, interleave  # noqa: E402
from paddle_work import (  # noqa: E402
    StepWork,
    count_step,
    embedding_output_takes_gradient,
    lora_minimum,
    lora_shapes,
    training_step,
)
from process_memory import own_peak_rss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "overheads_paddle.md"
LIBRARIES = ("peftplug", "PaddleNLP")
RSS_SIDES = ("frozen base", "frozen base (A/A)", "peftplug", "PaddleNLP")
MIB = 1 << 20


@dataclass
class Models:
    """The four models of a run: the two LoRA models, the frozen base and its A/A copy."""

    lora: dict[str, Any]
    base: Any
    base_copy: Any


def frozen(model: Any) -> Any:
    """``model`` with every parameter frozen and its embeddings' output taking a gradient."""
    for parameter in model.parameters():
        parameter.stop_gradient = True
    embedding_output_takes_gradient(model)
    model.train()
    return model


def token_batch(sizes: Sizes) -> paddle.Tensor:
    """The fixed batch of token ids."""
    ids = np.random.default_rng(2).integers(0, sizes.vocab, size=(sizes.batch, sizes.tokens))
    return paddle.to_tensor(ids, dtype="int64")


def build_models(sizes: Sizes, input_ids: paddle.Tensor) -> Models:
    """The LoRA models (checked to agree) and two frozen copies of their base."""
    ours, theirs, _ = wrap_both(sizes)
    for model in (ours, theirs):
        model.train()  # dropout is 0; PaddleNLP's LoRA merges its weights in eval()
    check_agreement(ours, theirs, input_ids)
    base = paddle_llama(sizes)  # seeded as wrap_both's
    return Models({"peftplug": ours, "PaddleNLP": theirs}, frozen(base), frozen(paddle_llama(sizes, base.state_dict())))


def check_agreement(ours: Any, theirs: Any, input_ids: paddle.Tensor) -> None:
    """Stop unless both libraries give the same logits and LoRA gradients."""
    logit_difference = np.abs(logits_of(ours, input_ids) - logits_of(theirs, input_ids)).max()
    for model in (ours, theirs):
        model(input_ids=input_ids, labels=input_ids)[0].backward()
    mine, reference = lora_gradients(ours), lora_gradients(theirs)
    for model in (ours, theirs):
        model.clear_gradients()
    if mine.keys() != reference.keys():
        raise SystemExit("peftplug's and PaddleNLP's LoRA gradients name different parameters")
    gradient_difference = max(np.abs(mine[key] - reference[key]).max() for key in mine)
    print(f"  max |logits difference| {logit_difference:.2e}, max |LoRA gradient difference| {gradient_difference:.2e}")
    if logit_difference > 1e-4 or gradient_difference > 1e-4:
        raise SystemExit("peftplug and PaddleNLP disagree")


def adamw(model: Any) -> paddle.optimizer.AdamW:
    """AdamW over ``model``'s trainable parameters."""
    return paddle.optimizer.AdamW(
        learning_rate=1e-4, parameters=[parameter for parameter in model.parameters() if not parameter.stop_gradient]
    )


def inference(model: Any, input_ids: paddle.Tensor) -> Callable[[], None]:
    """A forward under ``no_grad``."""

    def forward() -> None:
        with paddle.no_grad():
            model(input_ids=input_ids)

    return forward


def unit(label: str, body: Callable[[], None]) -> Unit:
    """A timed unit running ``body``."""
    return Unit(label, lambda _: body())


def timed(models: Models, optimizers: dict[str, Any], input_ids: paddle.Tensor, args: Any) -> dict[str, list[Unit]]:
    """The training and inference units, each set timed in its own interleaved rounds; the
    frozen base first, its A/A copy last."""
    quiet = PaddleQuiet(pause=args.pause, max_wait=args.max_wait)
    rows = {}
    for row, body in (
        ("training", lambda model, name: training_step(model, input_ids, optimizers.get(name))),
        ("inference", lambda model, name: inference(model, input_ids)),
    ):
        units = [unit("frozen base", body(models.base, "base"))]
        units += [unit(name, body(model, name)) for name, model in models.lora.items()]
        units.append(unit("frozen base (A/A)", body(models.base_copy, "base")))
        print(f"  {row}", flush=True)
        interleave(units, args.repeats, args.warmup, quiet, reference=0)
        rows[row] = units
        gc.collect()
    return rows


def counted(models: Models, optimizers: dict[str, Any], input_ids: paddle.Tensor) -> dict[str, dict[str, StepWork]]:
    """What each library adds to the frozen base's training step and inference, counted (the
    LoRA models' embeddings' output made to take a gradient too, so both backward passes run
    through every layer)."""
    for model in models.lora.values():
        embedding_output_takes_gradient(model)
    bodies = {
        "training": lambda model, name: training_step(model, input_ids, optimizers.get(name)),
        "inference": lambda model, name: inference(model, input_ids),
    }
    works: dict[str, dict[str, StepWork]] = {}
    for row, body in bodies.items():
        base_step = body(models.base, "base")
        base_step()
        base = count_step(base_step)
        works[row] = {"frozen base": base}
        for name, model in models.lora.items():
            step = body(model, name)
            step()
            works[row][name] = count_step(step) - base
    return works


def inference_minimum(shapes: list[tuple[int, int, int]], tokens: int) -> StepWork:
    """The analytic minimum LoRA adds to a forward without gradients: ``x A``, the scale on the
    ``[T, r]`` hidden, ``(s h) B``, the add into the base's output, per module."""
    work = StepWork()
    for in_features, out_features, r in shapes:
        work.flops += 2 * tokens * r * (in_features + out_features)
        work.calls["LoRA module"] += 4
        work.allocated_bytes += 4 * tokens * (2 * r + out_features)
    return work


def rss_child(side: str, sizes: Sizes) -> int:
    """In a subprocess: build ``side``'s model, run 3 training steps, print ``ru_maxrss``,
    ``VmHWM`` and the peak of Paddle's CPU allocator (MiB)."""
    from paddlenlp.peft import LoRAConfig, LoRAModel

    import peftplug

    input_ids = token_batch(sizes)
    if side.startswith("frozen base"):
        model, optimizer = frozen(paddle_llama(sizes)), None
    else:
        base = paddle_llama(sizes)
        if side == "peftplug":
            config = peftplug.LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=TARGETS)
            model = peftplug.get_peft_model(base, config)
        else:
            model = LoRAModel(base, LoRAConfig(target_modules=[f".*{t}" for t in TARGETS], r=16, lora_alpha=32))
        model.train()
        optimizer = adamw(model)
    step = training_step(model, input_ids, optimizer)
    for _ in range(3):
        step()
    peaks = {
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "hwm_mib": own_peak_rss() / MIB,
        "tensor_peak_mib": paddle.base.core.host_memory_stat_peak_value("Allocated", 0) / MIB,
    }
    print(json.dumps(peaks))
    return 0


def peak_rss(args: Any, malloc: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each side's peaks (MiB, :func:`rss_child`) from its own subprocess with the environment
    variables ``malloc`` added, run one after another. Run before this process builds its models:
    a child's ``ru_maxrss`` starts at its parent's RSS; the child's ``VmHWM`` (its own peak) must
    agree with it to 1 MiB, or this stops."""
    peaks = {}
    for side in RSS_SIDES:
        command = [sys.executable, __file__, "--rss-child", side, "--threads", str(args.threads)]
        command += ["--quick"] if args.quick else []
        done = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **malloc})
        child = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {side} {malloc or ''}: {child}", flush=True)
        if abs(child["maxrss_mib"] - child["hwm_mib"]) > 1:
            raise SystemExit(f"{side}: ru_maxrss is the parent's, not the child's own peak")
        peaks[side] = child
    return peaks


def memory_rows(args: Any) -> dict[str, dict[str, float]]:
    """Row (3) and its two readings: peak RSS with glibc's default malloc, peak RSS with its
    mmap threshold fixed at 128 KiB (every freed block that large goes back to the system at
    once), and the peak bytes Paddle's CPU allocator held (the tensors alone)."""
    default = peak_rss(args, {})
    trimmed = peak_rss(args, {"MALLOC_MMAP_THRESHOLD_": "131072"})
    return {
        "(3) peak RSS, 3 training steps (MiB)": {side: peak["maxrss_mib"] for side, peak in default.items()},
        "(3b) the same, `MALLOC_MMAP_THRESHOLD_=131072`": {side: peak["maxrss_mib"] for side, peak in trimmed.items()},
        "(3c) peak of Paddle's CPU allocator (tensors, MiB)": {
            side: peak["tensor_peak_mib"] for side, peak in default.items()
        },
    }


def ms(unit_: Unit) -> str:
    """A unit's median, in ms."""
    return f"{unit_.median_ms:.1f}"


def timed_table(rows: dict[str, list[Unit]], memory: dict[str, dict[str, float]]) -> list[str]:
    """Rows (1)-(3): medians, each side's per-round ratio to the frozen base, and the A/A's."""
    names = {"training": "(1) training step / frozen base forward + backward", "inference": "(2) unmerged inference"}
    lines = [
        "| row | frozen base | peftplug | PaddleNLP | A/A copy | peftplug / base | PaddleNLP / base | A/A / base "
        "| peftplug / PaddleNLP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row, (base, ours, theirs, copy) in rows.items():
        lines.append(
            f"| {names[row]} (ms) | {ms(base)} | {ms(ours)} | {ms(theirs)} | {ms(copy)} | "
            f"{ours.paired_ratio(base):.3f} | {theirs.paired_ratio(base):.3f} | {copy.paired_ratio(base):.3f} | "
            f"{ours.paired_ratio(theirs):.3f} |"
        )
    for label, peaks in memory.items():
        base = peaks["frozen base"]
        lines.append(
            f"| {label} | {base:.1f} | {peaks['peftplug']:.1f} | {peaks['PaddleNLP']:.1f} | "
            f"{peaks['frozen base (A/A)']:.1f} | {peaks['peftplug'] - base:+.1f} | {peaks['PaddleNLP'] - base:+.1f} | "
            f"{peaks['frozen base (A/A)'] - base:+.1f} | {peaks['peftplug'] - peaks['PaddleNLP']:+.1f} |"
        )
    return lines


def against(value: float, minimum: float, scale: float, digits: int) -> str:
    """``value`` scaled, and its ratio to ``minimum`` (none where the minimum is 0)."""
    ratio = f" ({value / minimum:.2f}x)" if minimum else ""
    return f"{value / scale:.{digits}f}{ratio}"


def counted_table(works: dict[str, StepWork], minimum: StepWork, peak_minimum: str | None = None) -> list[str]:
    """One counted table: each library's figure and its ratio to the analytic minimum."""
    measures = (
        ("GFLOP (matrix products)", lambda w: w.flops, 1e9, 4),
        ("operator calls", lambda w: w.total_calls, 1, 0),
        ("MB allocated", lambda w: w.allocated_bytes, 1e6, 3),
        ("MB peak live", lambda w: w.peak_live_bytes, 1e6, 3),
    )
    lines = ["| count | analytic minimum | peftplug | PaddleNLP |", "|---|---:|---:|---:|"]
    for label, value, scale, digits in measures:
        least = value(minimum)
        shown_minimum = peak_minimum if label == "MB peak live" and peak_minimum else f"{least / scale:.{digits}f}"
        cells = [against(value(works[name]), least, scale, digits) for name in LIBRARIES]
        lines.append(f"| {label} | {shown_minimum} | {' | '.join(cells)} |")
    return lines


def call_lines(works: dict[str, StepWork]) -> list[str]:
    """The operators each library adds, by name."""
    return [
        f"- {name}: " + ", ".join(f"`{op}` {count:+d}" for op, count in sorted(works[name].calls.items()))
        for name in LIBRARIES
    ]


def report(sizes: Sizes, args: Any, started: float, timings: dict, memory: dict, works: dict, shapes: list) -> str:
    """The results file."""
    import paddlenlp

    tokens = sizes.batch * sizes.tokens
    training, inference_work = works["training"], works["inference"]
    base = training["frozen base"]
    lines = [
        "# What LoRA adds to a frozen base on Paddle (CPU): peftplug vs PaddleNLP LoRAModel",
        "",
        heading("bench_overheads_paddle.py", started),
        "",
        f"paddlepaddle {paddle.__version__}, paddlenlp {paddlenlp.__version__}, Python {platform.python_version()}, "
        f"{args.threads} threads, {os.cpu_count()} CPUs (shared), MKL_DEBUG_CPU_TYPE=5. PaddleNLP Llama: hidden "
        f"{sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, vocab {sizes.vocab}; batch "
        f"{sizes.batch} x {sizes.tokens}; LoRA r=16, alpha 32, dropout 0 on {', '.join(TARGETS)} "
        f"({len(shapes)} modules), the same weights in both libraries (logits and LoRA gradients checked equal). "
        "Frozen base: the same Llama, every parameter frozen, its embeddings' output taking a gradient.",
        "",
        "## Timed",
        "",
        f"{args.repeats} rounds after {args.warmup} untimed, each set (training, inference) in its own rounds, "
        "the four units in rotating order; ratio: the median over rounds of the two times in the same round. "
        "A/A copy: a second frozen base, the same work as the first (the ratio the shared machine alone gives). "
        "Row (3): `ru_maxrss` of a subprocess that builds one model and runs 3 training steps (the frozen base: "
        "forward + backward), one subprocess per column, started while this process is small (a child's "
        "`ru_maxrss` starts at its parent's RSS; each child's own `VmHWM` agreed with it to 1 MiB); the ratio "
        "columns give the difference to the frozen base in MiB. (3b): the same with glibc's mmap threshold fixed "
        "at 128 KiB, so that freed large blocks go back to the system at once instead of staying in the heap; "
        "(3c): the highest count of bytes Paddle's CPU allocator held in the same (default) processes, model "
        "building included: what the tensors alone need.",
        "",
        *timed_table(timings, memory),
        "",
        "## Counted: one training step, what LoRA adds over the frozen base",
        "",
        "Each library's step (forward with labels, backward, AdamW, `clear_grad`) less the frozen base's "
        "(forward with labels, backward), both with the embeddings' output taking a gradient, after an "
        "uncounted step; the counts do not vary from run to run. In brackets: the ratio to the analytic minimum "
        "(`benchmarks/paddle_work.py`, `lora_minimum`; per module with `T` tokens: `6 T r (in + out)` FLOPs; "
        "12 operator calls; `4 (4 T r + T (in + out) + r (in + out))` bytes allocated; `4 T r` bytes peak live). "
        f"The frozen base's own step: {base.flops / 1e9:.3f} GFLOP, {base.total_calls} operator calls, "
        f"{base.allocated_bytes / 1e6:.1f} MB allocated, {base.peak_live_bytes / 1e6:.1f} MB peak live.",
        "",
        *counted_table(training, lora_minimum(shapes, tokens)),
        "",
        "Operator calls added, by operator:",
        "",
        *call_lines(training),
        "",
        "## Counted: unmerged inference, what LoRA adds over the frozen base",
        "",
        "A forward under `no_grad` less the frozen base's; analytic minimum per module `2 T r (in + out)` "
        "FLOPs, 4 operator calls, `4 T (2 r + out)` bytes allocated, no adapter tensor live past its module.",
        "",
        *counted_table(inference_work, inference_minimum(shapes, tokens), peak_minimum="0"),
        "",
        *call_lines(inference_work),
        "",
        "## How it is counted (paddle 3.3.1, CPU)",
        "",
        "- operator calls: `paddle.profiler.Profiler(targets=[CPU], profile_memory=True)`; one `Operator` event "
        "per forward operator and per backward node (`Global_…GradNode`), counted by name. Its `record_shapes` "
        "records nothing in dygraph mode and its FLOPs column reads 0, hence:",
        "- FLOPs: `_C_ops.matmul`, `_C_ops.linear` and `Tensor.__matmul__` wrapped while counting; each product "
        "adds `2 numel(out) K`, and again per operand taking a gradient when autograd records it (products inside "
        "a `PyLayer` are counted as they run).",
        "- bytes allocated: the sum of the profiler's `Allocate` memory events (every allocation of the CPU "
        "allocator: outputs and kernels' scratch).",
        "- peak live bytes: `core.host_memory_stat_peak_value('Allocated', 0)`, reset before the step, less "
        "the bytes live when it began.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Time, count, measure peak RSS, and write the table."""
    parser = parser_for(__doc__, warmup=1)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds to pause before each timed run (0.2)")
    parser.add_argument("--max-wait", type=float, default=5.0, help="longest wait (s) for a quiet machine (5)")
    parser.add_argument("--threads", type=int, default=2, help="Paddle's threads (2)")
    parser.add_argument("--rss-child", choices=RSS_SIDES, help="(for its own subprocesses) one side's peak RSS")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    paddle.base.core.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args.rss_child, sizes)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 8
    started = time.perf_counter()
    memory = memory_rows(args)
    input_ids = token_batch(sizes)
    models = build_models(sizes, input_ids)
    optimizers = {name: adamw(model) for name, model in models.lora.items()}
    timings = timed(models, optimizers, input_ids, args)
    print("  counting", flush=True)
    works = counted(models, optimizers, input_ids)
    shapes = lora_shapes(models.lora["peftplug"])
    return publish(report(sizes, args, started, timings, memory, works, shapes), args, RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
