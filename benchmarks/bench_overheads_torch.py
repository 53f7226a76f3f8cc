"""What LoRA costs over the frozen base model, timed and counted in one run: peftplug and HF PEFT
(PyTorch, CPU).

One Llama-shaped base (the model and batch of ``bench_lora_torch.py``) and, with its weights,
peftplug's and HF PEFT's LoRA r=16 on all 7 linear kinds (identical A and B, B nonzero). Three
figures, each per library:

1. a LoRA training step (forward with labels, backward, AdamW) over the frozen base's forward and
   backward (the backward from the loss down to layer 0's q, k and v outputs, the first tensors a
   LoRA gradient needs: :func:`work_lora_torch.frozen_base_phases`);
2. an unmerged ``no_grad`` forward over the base's;
3. the peak resident memory of a process that builds the model and runs 3 training steps, over
   that of a process that does the same with the frozen base (each in its own subprocess, which
   imports the same libraries; ``VmHWM``).

Figures 1 and 2 are timed in interleaved rounds (order rotated each round, the median over
rounds of each round's ratio), with a second copy of the base as the A/A control. Beside each the
counted floor: the FLOPs of the LoRA side over the base's (``FlopCounterMode``), and for 3 the
bytes the step keeps live over the frozen base's (``work_lora_torch.py``'s count).

``python benchmarks/bench_overheads_torch.py`` writes ``benchmarks/results/overheads_torch.md``;
``--quick`` is a small smoke run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import heading, parser_for, publish  # noqa: E402
from bench_lora_torch import FULL, QUICK, Quiet, Sizes, Unit, interleave, llama, lora_configs, training_step  # noqa: E402
from process_memory import own_peak_rss  # noqa: E402
from work_lora_torch import counting_flops, frozen_base_phases, frozen_base_work, lora_step_work, models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "overheads_torch.md"
RSS_STEPS = 3
LIBRARIES = ("peftplug", "HF PEFT")


def step_flops(run) -> int:
    """FLOPs of one call of ``run``."""
    with counting_flops() as flops:
        run()
    return flops.get_total_flops()


def base_step(phases: dict):
    """A unit body: the frozen base's forward and backward (:func:`frozen_base_phases`)."""

    def run(_=None) -> None:
        """One forward and backward of the frozen base."""
        phases["forward"]()
        phases["backward"]()

    return run


def no_grad_forward(model, input_ids: torch.Tensor):
    """A unit body: one ``no_grad`` forward."""

    def run(_=None) -> None:
        """One forward."""
        with torch.no_grad():
            model(input_ids=input_ids)

    return run


def timed_rows(sizes: Sizes, repeats: int, warmup: int, input_ids: torch.Tensor) -> tuple[dict, dict]:
    """Figures 1 and 2, timed, with their FLOP floors; and the live bytes each step keeps."""
    ours, theirs, base = models(sizes)
    control = llama(sizes)
    control.load_state_dict(base.state_dict())
    lora = {"peftplug": ours, "HF PEFT": theirs}
    flops, live = {}, {}
    base_phases, base_outputs = frozen_base_phases(base, input_ids)  # its hooks stay: build them once
    reference_work, _ = frozen_base_work(base, base_phases, base_outputs)
    for label, model in lora.items():
        work = lora_step_work(model, input_ids)
        flops[("step", label)] = (work["forward"].flops + work["backward"].flops) / (
            reference_work["forward"].flops + reference_work["backward"].flops
        )
        live[label] = work["forward"].live_after - reference_work["forward"].live_after
        flops[("inference", label)] = step_flops(no_grad_forward(model, input_ids)) / step_flops(
            no_grad_forward(base, input_ids)
        )
    step_units = [
        Unit("base", base_step(base_phases)),
        Unit("base (A/A)", base_step(frozen_base_phases(control, input_ids)[0])),
    ]
    for label, model in lora.items():
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        step_units.append(Unit(label, training_step(model, optimizer, input_ids)))
    interleave(step_units, repeats, warmup, Quiet(), reference=0)
    for model in (ours, theirs, control):
        model.eval()
    base.eval()
    inference_units = [
        Unit("base", no_grad_forward(base, input_ids)),
        Unit("base (A/A)", no_grad_forward(control, input_ids)),
    ]
    inference_units += [Unit(label, no_grad_forward(model, input_ids)) for label, model in lora.items()]
    interleave(inference_units, repeats, warmup, Quiet(), reference=0)
    units = {("step", u.label): u for u in step_units} | {("inference", u.label): u for u in inference_units}
    return {"units": units, "flops": flops}, live


def rss_child(side: str, quick: bool) -> int:
    """In a subprocess: build ``side``'s model, run 3 steps, print the peak RSS in bytes."""
    import peft  # every side imports the same libraries

    import peftplug

    sizes = QUICK if quick else FULL
    torch.set_num_threads(2)
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = llama(sizes).train()
    if side == "base":
        run = base_step(frozen_base_phases(model, input_ids)[0])
    else:
        ours_config, theirs_config = lora_configs()
        library, config = (peftplug, ours_config) if side == "peftplug" else (peft, theirs_config)
        model = library.get_peft_model(model, config).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        run = training_step(model, optimizer, input_ids)
    for _ in range(RSS_STEPS):
        run(None)
    print(json.dumps({"peak_rss": own_peak_rss()}))
    return 0


def peak_rss(side: str, quick: bool) -> int:
    """Peak RSS, in bytes, of a fresh process running :func:`rss_child` for ``side``."""
    command = [sys.executable, __file__, "--rss-child", side] + (["--quick"] if quick else [])
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss"]


def report(timed: dict, live: dict, rss: dict, sizes: Sizes, repeats: int, started: float) -> str:
    """The results file: one table, the counted figures beside the timed ones."""
    import peft
    import transformers

    units, flops = timed["units"], timed["flops"]
    control = {kind: units[(kind, "base (A/A)")].paired_ratio(units[(kind, "base")]) for kind in ("step", "inference")}
    rows = []
    for kind, title in (
        ("step", "LoRA training step / frozen-base forward + backward"),
        ("inference", "unmerged inference (`no_grad` forward) / base"),
    ):
        cells = []
        for label in LIBRARIES:
            ratio = units[(kind, label)].paired_ratio(units[(kind, "base")])
            cells.append(f"{ratio:.3f} ({units[(kind, label)].median_ms:.0f} ms)")
        floor = " / ".join(f"{flops[(kind, label)]:.4f}" for label in LIBRARIES)
        rows.append(
            f"| {title} | {' | '.join(cells)} | {units[(kind, 'base')].median_ms:.0f} ms | {control[kind]:.3f} "
            f"| FLOPs {floor} |"
        )
    mib = 2**20
    rss_cells = " | ".join(f"+{(rss[label] - rss['base']) / mib:.0f} MiB" for label in LIBRARIES)
    live_cells = " / ".join(f"{live[label] / mib:.1f}" for label in LIBRARIES)
    rows.append(
        f"| peak RSS of {RSS_STEPS} training steps above the frozen-base run | {rss_cells} | "
        f"{rss['base'] / mib:.0f} MiB | | kept for backward over the frozen base, MiB: {live_cells} |"
    )
    return "\n".join(
        [
            "# LoRA over the frozen base: peftplug and HF PEFT (PyTorch, CPU), timed and counted in one run",
            "",
            heading("bench_overheads_torch.py", started),
            "",
            f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"Python {platform.python_version()}, 2 threads, 2 CPUs.",
            f"Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
            f"vocab {sizes.vocab}; batch {sizes.batch} x {sizes.tokens} tokens; LoRA r=16, alpha 32, dropout 0 on all "
            f"7 linear kinds. {repeats} timed rounds, the order rotated each round; a ratio is the median over rounds "
            "of the LoRA side's time over the base's in the same round. The script's docstring defines each figure.",
            "",
            "| figure | peftplug | HF PEFT | base | A/A (base copy / base) | counted floor (peftplug / HF PEFT) |",
            "|---|---:|---:|---:|---:|---|",
            *rows,
            "",
            "The counted floor of a ratio is the LoRA side's FLOPs over the base's: what the adapters' products add, "
            "the least any implementation does. The per-phase counts against their minimum are in "
            "`lora_torch_work.md`.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Time, count and measure, then write the table."""
    parser = parser_for(__doc__)
    parser.add_argument(
        "--rss-child", choices=("peftplug", "HF PEFT", "base"), help="internal: one side's peak-RSS run"
    )
    args = parser.parse_args(argv)
    if args.rss_child:
        return rss_child(args.rss_child, args.quick)
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (3 if args.quick else 10)
    torch.set_num_threads(2)
    input_ids = torch.randint(3, sizes.vocab, (sizes.batch, sizes.tokens), generator=torch.Generator().manual_seed(2))
    timed, live = timed_rows(sizes, repeats, args.warmup, input_ids)
    rss = {side: peak_rss(side, args.quick) for side in ("base", *LIBRARIES)}
    return publish(report(timed, live, rss, sizes, repeats, started), args, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
