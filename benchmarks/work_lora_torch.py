"""What LoRA adds to a training step over the frozen base, counted: peftplug and HF PEFT against
the analytic minimum (PyTorch).

Three models of one Llama-shaped base with the same weights: peftplug and HF PEFT with LoRA r=16
on all 7 linear kinds (identical A and B, B nonzero), and the frozen base itself. The frozen
base's step is forward with labels and a backward that starts where the adapters' first gradient
is needed: the outputs of layer 0's q, k and v projections are made to require a gradient, so
the backward runs through every layer, as the LoRA step's must, and nothing more.

Per phase of one step (forward, backward; AdamW apart, as the reference has none), after one
uncounted step, each library's figure is its count minus the frozen base's:

- FLOPs (``FlopCounterMode``, with the in-place ``addmm_`` it does not know counted as ``addmm``);
- compute operator calls (aten calls that make a new tensor or write one in place; views apart);
- bytes of new tensors (each new storage once, whatever views of it are made);
- peak live bytes (the largest sum, between two aten calls, of the storages made during the step
  and still alive).

The analytic minimum, per adapted module with ``T`` tokens, rank ``r``, ``in`` and ``out``
features, float32 (4 bytes), see :mod:`peftplug.plugins.lora.torch_linear_function`::

    forward   FLOPs 2 T r (in + out)        calls 2 (x Aᵀ; h Bᵀ added into the base output)
              new bytes 4 T r               (h)
    backward  FLOPs 2 T r (2 out + in)      calls 3 (dh, dB, dA)
              + 2 T r in, 1 call            (dh A added into dx, where the input needs a gradient:
                                             all but layer 0's q, k and v)
              new bytes 4 r (T + in + out)  (dh, dA, dB)
    kept for backward (live after the forward, and so at the peak): 4 T r per module (h), and the
              inputs dA needs that the frozen base does not keep alive itself (found by weak
              references after the base's forward: down_proj's input, as the base differentiates
              act(gate) * up through its factors; layer 0's normed input, which the base's
              backward never reaches; o_proj's input where the attention kernel keeps its own)

``python benchmarks/work_lora_torch.py`` writes ``benchmarks/results/lora_torch_work.md``;
``--quick`` counts a small model.
"""

from __future__ import annotations

import collections
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import heading, parser_for, publish  # noqa: E402
from bench_lora_torch import FULL, QUICK, TARGETS, Sizes, llama, lora_configs, share_lora_weights  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "lora_torch_work.md"
PHASES = ("forward", "backward", "optimizer")
FIRST_INPUTS = ("layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj")


def _addmm_flops(_self_shape, mat1_shape, mat2_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``self.addmm_(mat1, mat2)``: those of the product."""
    return 2 * mat1_shape[0] * mat1_shape[1] * mat2_shape[1]


def counting_flops() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the in-place ``addmm_``."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops})


@dataclass
class PhaseWork:
    """What one phase of a step did."""

    flops: int = 0
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    new_bytes: int = 0
    peak_live: int = 0
    live_after: int = 0

    @property
    def compute_calls(self) -> int:
        """Calls that made a new tensor or wrote one in place."""
        return sum(n for name, n in self.calls.items() if not name.startswith("view:"))


class WorkCounter(TorchDispatchMode):
    """Counts each aten call of the current phase by name, the bytes of the new storages they
    make, and the peak of the live bytes of every storage made since counting began."""

    def __init__(self) -> None:
        super().__init__()
        self.phases = {phase: PhaseWork() for phase in PHASES}
        self.phase = PHASES[0]
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        work = self.phases[self.phase]
        alias = func._schema.returns[0].alias_info if func._schema.returns else None
        self._live = {ptr: entry for ptr, entry in self._live.items() if not entry[0].expired()}
        made = 0
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if storage.nbytes() == 0 or ptr in inputs or ptr in self._live:
                continue
            self._live[ptr] = (StorageWeakRef(storage), storage.nbytes())
            made += storage.nbytes()
        work.new_bytes += made
        computes = made or (alias is not None and alias.is_write)  # else a view (``_unsafe_view`` too)
        work.calls[("" if computes else "view:") + str(func.overloadpacket)] += 1
        work.peak_live = max(work.peak_live, self.live_bytes())
        return out

    def live_bytes(self) -> int:
        """Bytes of the storages made since counting began that are still alive."""
        return sum(nbytes for ref, nbytes in self._live.values() if not ref.expired())


def counted(phases: dict) -> dict[str, PhaseWork]:
    """Run ``phases`` ({phase: callable}) in order under the counters; the work of each."""
    with counting_flops() as flops:
        with WorkCounter() as counter:
            for phase, run in phases.items():
                counter.phase = phase
                before = flops.get_total_flops()
                run()
                counter.phases[phase].flops = flops.get_total_flops() - before
                counter.phases[phase].live_after = counter.live_bytes()
    return {phase: counter.phases[phase] for phase in phases}


def lora_step_work(model, input_ids: torch.Tensor) -> dict[str, PhaseWork]:
    """One LoRA training step's work per phase, after an uncounted step (AdamW state made)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    state = {}

    def forward():
        state["loss"] = model(input_ids=input_ids, labels=input_ids).loss

    def backward():
        state.pop("loss").backward()

    def step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for run in (forward, backward, step):
        run()
    return counted({"forward": forward, "backward": backward, "optimizer": step})


def frozen_base_phases(base, input_ids: torch.Tensor) -> tuple[dict[str, Callable[[], None]], list[torch.Tensor]]:
    """The frozen base's step as {"forward", "backward"}, and the tensors the backward starts
    from: ``base`` is frozen, and (by hooks it keeps) the outputs of layer 0's q, k and v
    projections require a gradient when one is being recorded, so the backward runs from the loss
    down to them (the first tensors a LoRA gradient needs) and no further. The list holds them
    from the forward to the end of the backward (a LoRA step would have let them go)."""
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    outputs: list[torch.Tensor] = []

    def needs_grad(module, args, output):
        if not torch.is_grad_enabled():
            return None
        output = output.detach().requires_grad_()
        outputs.append(output)
        return output

    modules = dict(base.model.named_modules())
    for name in FIRST_INPUTS:
        modules[name].register_forward_hook(needs_grad)
    state = {}

    def forward():
        outputs.clear()
        state["loss"] = base(input_ids=input_ids, labels=input_ids).loss

    def backward():
        torch.autograd.grad(state.pop("loss"), outputs)
        outputs.clear()

    return {"forward": forward, "backward": backward}, outputs


def frozen_base_work(
    base, phases: dict[str, Callable[[], None]], outputs: list[torch.Tensor]
) -> tuple[dict[str, PhaseWork], int]:
    """The work of the frozen base's step (``phases`` and ``outputs`` from
    :func:`frozen_base_phases`), after an uncounted one; and the bytes of the target Linears'
    inputs it does not keep (:func:`unkept_input_bytes`)."""
    unkept = unkept_input_bytes(base, phases["forward"])
    held = sum(output.untyped_storage().nbytes() for output in outputs)
    phases["backward"]()
    work = counted(phases)
    for phase in work.values():  # what only this harness keeps alive
        phase.peak_live -= held
    work["forward"].live_after -= held
    return work, unkept


def unkept_input_bytes(base, forward) -> int:
    """Bytes of the LoRA target Linears' inputs that the frozen base does not keep alive through
    ``forward`` (weak references checked after it): those a LoRA step must keep for dA."""
    inputs: list[tuple[int, StorageWeakRef, int]] = []  # q, k and v (gate and up) share one input

    def record(module, args):
        storage = args[0].untyped_storage()
        if not any(ptr == storage.data_ptr() and not ref.expired() for ptr, ref, _ in inputs):
            inputs.append((storage.data_ptr(), StorageWeakRef(storage), storage.nbytes()))

    handles = [
        module.register_forward_pre_hook(record)
        for name, module in base.named_modules()
        if name.rsplit(".", 1)[-1] in TARGETS
    ]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return sum(nbytes for _, ref, nbytes in inputs if ref.expired())


@dataclass
class Minimum:
    """The analytic minimum of what LoRA adds, per phase (see the module docstring)."""

    flops: dict[str, int]
    calls: dict[str, int]
    new_bytes: dict[str, int]
    kept_bytes: int


def analytic_minimum(model, sizes: Sizes, unkept_inputs: int) -> Minimum:
    """The minimum for ``model``'s LoRA Linear layers on a batch of ``sizes``, where the frozen
    base does not keep ``unkept_inputs`` bytes of the adapted modules' inputs."""
    tokens = sizes.batch * sizes.tokens
    flops = dict.fromkeys(("forward", "backward"), 0)
    calls = dict.fromkeys(("forward", "backward"), 0)
    new_bytes = dict.fromkeys(("forward", "backward"), 0)
    kept_bytes = unkept_inputs
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A"):
            continue
        rank, features_in, features_out = module.r["default"], module.in_features, module.out_features
        needs_dx = not name.endswith(FIRST_INPUTS)
        flops["forward"] += 2 * tokens * rank * (features_in + features_out)
        flops["backward"] += 2 * tokens * rank * (2 * features_out + features_in + (features_in if needs_dx else 0))
        calls["forward"] += 2
        calls["backward"] += 3 + needs_dx
        new_bytes["forward"] += 4 * tokens * rank
        new_bytes["backward"] += 4 * rank * (tokens + features_in + features_out)
        kept_bytes += 4 * tokens * rank
    return Minimum(flops, calls, new_bytes, kept_bytes)


def models(sizes: Sizes):
    """peftplug's and HF PEFT's LoRA models and the plain base, with the same weights."""
    import peft

    import peftplug

    torch.manual_seed(0)
    base = llama(sizes)
    state = base.state_dict()
    copies = []
    for _ in range(2):
        copy = llama(sizes)
        copy.load_state_dict(state)
        copies.append(copy)
    ours_config, theirs_config = lora_configs()
    theirs = peft.get_peft_model(copies[0], theirs_config).train()
    ours = peftplug.get_peft_model(copies[1], ours_config).train()
    share_lora_weights(theirs, ours)
    return ours, theirs, base.train()


def added(work: dict[str, PhaseWork], reference: dict[str, PhaseWork], phase: str) -> dict[str, int]:
    """``work``'s figures of ``phase`` minus the frozen base's (peak live: over the whole step)."""
    peak = max(w.peak_live for w in work.values() if w is not work["optimizer"])
    return {
        "flops": work[phase].flops - reference[phase].flops,
        "calls": work[phase].compute_calls - reference[phase].compute_calls,
        "new_bytes": work[phase].new_bytes - reference[phase].new_bytes,
        "peak_live": peak - max(w.peak_live for w in reference.values()),
        "live_after": work["forward"].live_after - reference["forward"].live_after,
    }


def call_differences(work: dict[str, PhaseWork], reference: dict[str, PhaseWork], phase: str) -> str:
    """The operators ``phase`` called more (or fewer) times than the frozen base, ``name +n``."""
    ours, theirs = work[phase].calls, reference[phase].calls
    names = sorted(set(ours) | set(theirs))
    return ", ".join(f"`{n}` {ours[n] - theirs[n]:+d}" for n in names if ours[n] != theirs[n]) or "none"


def table(results: dict[str, dict[str, PhaseWork]], reference: dict[str, PhaseWork], minimum: Minimum) -> list[str]:
    """The counted table: per figure, each library's addition over the frozen base, the minimum,
    and each library's addition over the minimum."""
    labels = list(results)
    lines = [
        "| added over the frozen base | "
        + " | ".join(labels)
        + " | analytic minimum | "
        + " | ".join(f"{label} / minimum" for label in labels)
        + " |",
        "|---|" + "---:|" * (2 * len(labels) + 1),
    ]
    rows = [
        ("forward GFLOP", "forward", "flops", minimum.flops["forward"], 1e9),
        ("backward GFLOP", "backward", "flops", minimum.flops["backward"], 1e9),
        ("forward compute calls", "forward", "calls", minimum.calls["forward"], 1),
        ("backward compute calls", "backward", "calls", minimum.calls["backward"], 1),
        ("forward MB of new tensors", "forward", "new_bytes", minimum.new_bytes["forward"], 1e6),
        ("backward MB of new tensors", "backward", "new_bytes", minimum.new_bytes["backward"], 1e6),
        ("MB live after the forward (kept for backward)", "forward", "live_after", minimum.kept_bytes, 1e6),
        ("peak live MB (forward + backward)", "backward", "peak_live", minimum.kept_bytes, 1e6),
    ]
    for title, phase, key, least, unit in rows:
        values = [added(work, reference, phase)[key] for work in results.values()]
        shown = [f"{v / unit:,.3f}" if unit != 1 else f"{v:,}" for v in values]
        least_shown = f"{least / unit:,.3f}" if unit != 1 else f"{least:,}"
        lines.append(
            f"| {title} | "
            + " | ".join(shown)
            + f" | {least_shown} | "
            + " | ".join(f"{v / least:.3f}" for v in values)
            + " |"
        )
    return lines


def report(results, reference, minimum: Minimum, sizes: Sizes, started: float) -> str:
    """The results file."""
    import peft
    import transformers

    optimizer = " / ".join(
        f"{work['optimizer'].compute_calls:,} calls, {work['optimizer'].new_bytes / 1e6:.2f} MB new"
        for work in results.values()
    )
    differences = [
        f"- {label}, {phase}: {call_differences(work, reference, phase)}"
        for label, work in results.items()
        for phase in ("forward", "backward")
    ]
    return "\n".join(
        [
            "# What LoRA adds to a training step over the frozen base: peftplug and HF PEFT (PyTorch), counted",
            "",
            heading("work_lora_torch.py", started),
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}. Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, "
            f"{sizes.layers} layers, vocab {sizes.vocab}; batch {sizes.batch} x {sizes.tokens} tokens; LoRA r=16 on "
            "all 7 linear kinds, float32. The frozen base's backward starts at layer 0's q, k and v outputs (the "
            "script's docstring gives the method and the minimum's formula). Counts do not vary from run to run.",
            "",
            *table(results, reference, minimum),
            "",
            "The live-memory rows' minimum is what the adapters' backward reads that the frozen base does not "
            "keep: h, and the adapted modules' inputs that are gone after the base's forward (weak references). "
            "The frozen base's figures leave out its three layer-0 q, k and v outputs, which only the counting "
            "harness keeps (as the tensors its backward starts from).",
            "",
            f"AdamW step over the LoRA parameters (no minimum: the optimizer's own work), {' / '.join(results)}: "
            f"{optimizer}.",
            "",
            "Operator calls that differ from the frozen base's (views as `view:`):",
            "",
            *differences,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Count the three models' steps and write the table."""
    parser = parser_for(__doc__)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(2)
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(2))
    ours, theirs, base = models(sizes)
    results = {"peftplug": lora_step_work(ours, input_ids), "HF PEFT": lora_step_work(theirs, input_ids)}
    reference, unkept_inputs = frozen_base_work(base, *frozen_base_phases(base, input_ids))
    minimum = analytic_minimum(ours, sizes, unkept_inputs)
    return publish(report(results, reference, minimum, sizes, started), args, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
