"""The work of one training step, counted rather than timed: peftplug against HF PEFT (PyTorch).

Timing cannot tell whether peftplug does more than peft when both run the same kernels: the
A/A control of ``bench_methods_torch.py`` shows this shared host moving a library's ratio to
itself by several percent. Counting can. For each method, on the models and batch of that
benchmark (same frozen weights, equal trainable ones), one training step (forward with labels,
backward, AdamW, after one untimed step that creates the optimizer state) runs under two
dispatch modes, and the table gives, per library:

- FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matrix products and attention);
- aten operator calls (every call that reaches the dispatcher, forward and backward);
- bytes of new tensors (outputs of operators that allocate, views and in-place results left out).

The same counts are deterministic: a ratio of 1.000 means the same work, below 1 less. Operators
whose call counts differ are listed under the table. ``python benchmarks/work_methods_torch.py``
writes ``benchmarks/results/methods_torch_work.md``; ``--quick`` counts small models.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lora_torch import FULL, QUICK, training_step  # noqa: E402
from bench_methods_torch import METHODS, VIRTUAL_TOKENS, method_configs, paired_models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "methods_torch_work.md"


class OperatorCounter(TorchDispatchMode):
    """Counts aten operator calls by name, and the bytes of the new tensors they return."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()
        self.new_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls[str(func.overloadpacket)] += 1
        if not any(result.alias_info for result in func._schema.returns):  # a view or in-place result
            self.new_bytes += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


@dataclass
class StepWork:
    """What one training step of one model did."""

    flops: int
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    new_bytes: int = 0

    @property
    def total_calls(self) -> int:
        """Operator calls of every kind."""
        return sum(self.calls.values())


def step_work(model, input_ids: torch.Tensor) -> StepWork:
    """The counts of one training step of ``model``, after an uncounted one."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    run = training_step(model, optimizer, input_ids)
    run(None)
    with FlopCounterMode(display=False) as flops, OperatorCounter() as counter:
        run(None)
    return StepWork(flops.get_total_flops(), counter.calls, counter.new_bytes)


def differing_calls(ours: StepWork, theirs: StepWork) -> str:
    """The operators whose call counts differ, as ``name peftplug/peft``."""
    names = sorted(set(ours.calls) | set(theirs.calls))
    different = [f"`{n}` {ours.calls[n]}/{theirs.calls[n]}" for n in names if ours.calls[n] != theirs.calls[n]]
    return ", ".join(different) if different else "none"


def main(argv: list[str] | None = None) -> int:
    """Count each method's step on both libraries, print the table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models (a smoke run; writes no file)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - set(METHODS):
        parser.error(f"--methods takes a comma-separated list of {', '.join(METHODS)}; got {args.methods!r}")
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(2)
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(0))
    lines = [
        "| method | GFLOP peftplug | GFLOP peft | ratio | operator calls peftplug / peft | ratio "
        "| MB of new tensors peftplug / peft | ratio |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    notes = []
    for name in methods:
        ours_model, theirs_model, _ = paired_models(lambda name=name: method_configs(name), sizes)
        ours, theirs = step_work(ours_model, input_ids), step_work(theirs_model, input_ids)
        del ours_model, theirs_model
        gc.collect()
        lines.append(
            f"| {name} | {ours.flops / 1e9:.3f} | {theirs.flops / 1e9:.3f} | {ours.flops / theirs.flops:.4f} | "
            f"{ours.total_calls} / {theirs.total_calls} | {ours.total_calls / theirs.total_calls:.3f} | "
            f"{ours.new_bytes / 1e6:.1f} / {theirs.new_bytes / 1e6:.1f} | {ours.new_bytes / theirs.new_bytes:.4f} |"
        )
        notes.append(
            f"- {name}: operators called a different number of times (peftplug/peft): {differing_calls(ours, theirs)}"
        )
        print(lines[-1], flush=True)
    import peft
    import transformers

    text = "\n".join(
        [
            "# The work of one training step: peftplug vs HF PEFT (PyTorch), counted",
            "",
            f"`python benchmarks/work_methods_torch.py{' --quick' if args.quick else ''}` — "
            f"{datetime.datetime.now():%Y-%m-%d %H:%M}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"peft {peft.__version__}, Python {platform.python_version()}.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, vocab {sizes.vocab}; "
            f"batch {sizes.batch} x {sizes.tokens} tokens; {VIRTUAL_TOKENS} virtual tokens: the models of "
            "`bench_methods_torch.py`. Counts are of one step (forward with labels, backward, AdamW) after one "
            "uncounted step; they do not vary from run to run.",
            "",
            *lines,
            "",
            *notes,
            "",
        ]
    )
    print()
    print(text)
    if not args.quick:
        RESULTS.write_text(text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
