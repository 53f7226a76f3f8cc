"""peftplug's LoRA against PaddleNLP's ``LoRAModel`` on PaddlePaddle (CPU), in one process.

Both libraries wrap identical copies of a PaddleNLP ``LlamaForCausalLM`` with the same LoRA
weights (B made nonzero, so that both do the whole computation; logits and LoRA gradients are
checked equal first). The training step (forward with labels, backward, ``AdamW.step``,
``clear_grad``) is timed in interleaved rounds, one run of each side per round, the order
swapped every round, with garbage collection and a pause before each run (the machine is
shared); the judged figure is the median over rounds of peftplug's time / PaddleNLP's time in
the same round. As information, the same model's step on PyTorch (transformers + HF PEFT, same
weights) is timed afterwards, in its own rounds (the two frameworks' thread pools slow each
other down when interleaved).

``MKL_DEBUG_CPU_TYPE=5`` is set before paddle loads: Paddle's MKL otherwise takes a path ~6x
slower on the AMD CPUs here. Both frameworks run on ``--threads`` threads.

``python benchmarks/bench_lora_paddle.py`` runs at full size (hidden 1024, intermediate 2816,
4 layers, batch 4 x 128, LoRA r=16 on all linear layers) and writes
``benchmarks/results/lora_paddle.md``; ``--quick`` is a smoke run on a small model.
"""

from __future__ import annotations

import os

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import numpy as np  # noqa: E402
import paddle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lora_torch import Quiet, Row, Unit, at_most, interleave  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RESULTS = Path(__file__).resolve().parent / "results" / "lora_paddle.md"


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


FULL = Sizes(1024, 2816, 4, 16, 32000, 4, 128)
QUICK = Sizes(128, 352, 2, 4, 1000, 2, 32)


class PaddleQuiet(Quiet):
    """:class:`Quiet` with a Paddle matrix product as the probe (a torch one would wake torch's
    thread pool between Paddle runs)."""

    _operands: tuple[Any, Any] | None = None

    def probe(self) -> float:
        """Seconds for the fastest of three products of [256, 1024] by [1024, 1024]."""
        if self._operands is None:
            rng = np.random.default_rng(3)
            self._operands = tuple(
                paddle.to_tensor(rng.normal(size=shape).astype("float32")) for shape in ((256, 1024), (1024, 1024))
            )
        first, second = self._operands
        fastest = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            paddle.matmul(first, second).numpy()
            fastest = min(fastest, time.perf_counter() - start)
        self.best_probe = min(self.best_probe, fastest)
        return fastest


def llama_config(sizes: Sizes):
    """The PaddleNLP Llama config, untied embeddings."""
    from paddlenlp.transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=sizes.hidden,
        intermediate_size=sizes.intermediate,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        num_key_value_heads=sizes.heads,
        vocab_size=sizes.vocab,
        tie_word_embeddings=False,
    )


def paddle_llama(sizes: Sizes, state: dict | None = None):
    """A PaddleNLP ``LlamaForCausalLM`` (seed 0), with ``state`` copied in when given."""
    from paddlenlp.transformers import LlamaForCausalLM

    paddle.seed(0)
    model = LlamaForCausalLM(llama_config(sizes))
    if state is not None:
        model.set_state_dict(state)
    return model


def wrap_both(sizes: Sizes):
    """(peftplug model, PaddleNLP LoRAModel) on identical Llamas with identical LoRA weights."""
    from paddlenlp.peft import LoRAConfig, LoRAModel

    import peftplug

    first = paddle_llama(sizes)
    second = paddle_llama(sizes, first.state_dict())
    theirs = LoRAModel(first, LoRAConfig(target_modules=[f".*{t}" for t in TARGETS], r=16, lora_alpha=32))
    ours = peftplug.get_peft_model(
        second, peftplug.LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=TARGETS)
    )
    rng = np.random.default_rng(1)
    wanted = dict(ours.named_parameters())
    copied = 0
    for name, parameter in theirs.model.named_parameters():
        if name.endswith("lora_B"):
            parameter.set_value((rng.normal(size=parameter.shape) * 0.02).astype("float32"))
        if name.endswith(("lora_A", "lora_B")):
            wanted[f"base_model.model.{name}.default"].set_value(parameter.numpy())
            copied += 1
    if copied != sum(1 for name in wanted if ".lora_" in name):
        raise SystemExit(f"copied {copied} LoRA tensors; peftplug has a different number")
    return ours, theirs, copied


def logits_of(model, input_ids):
    """The model's logits, without gradients."""
    with paddle.no_grad():
        return model(input_ids=input_ids)[0].numpy()


def lora_gradients(model) -> dict[str, np.ndarray]:
    """Each LoRA parameter's gradient, by the PaddleNLP name of its parameter."""
    gradients = {}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and "lora_" in name:
            key = name.removeprefix("base_model.model.").removesuffix(".default").removeprefix("model.")
            gradients[key] = parameter.grad.numpy()
    return gradients


def paddle_step(model, optimizer, input_ids) -> Callable[[Any], None]:
    """A unit body: forward with labels, backward, AdamW step, gradients cleared."""

    def run(_: Any) -> None:
        """One training step."""
        loss = model(input_ids=input_ids, labels=input_ids)[0]
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)  # wait for the step to finish

    return run


def benchmark_paddle(sizes: Sizes, repeats: int, warmup: int, quiet: Quiet) -> tuple[Row, Any]:
    """The judged row: peftplug vs PaddleNLP training step. Also returns one model's state."""
    ours, theirs, copied = wrap_both(sizes)
    input_ids = paddle.to_tensor(
        np.random.default_rng(2).integers(0, sizes.vocab, size=(sizes.batch, sizes.tokens)), dtype="int64"
    )
    for model in (ours, theirs):
        model.train()  # PaddleNLP's LoRA merges its weights in eval(): train mode runs LoRA
    difference = np.abs(logits_of(ours, input_ids) - logits_of(theirs, input_ids)).max()
    print(f"  {copied} LoRA tensors shared; max |logits(peftplug) - logits(PaddleNLP)| = {difference:.2e}", flush=True)
    if difference > 1e-4:
        raise SystemExit(f"peftplug and PaddleNLP disagree: logits differ by {difference:.3e}")
    for model in (ours, theirs):
        model(input_ids=input_ids, labels=input_ids)[0].backward()
    mine, reference = lora_gradients(ours), lora_gradients(theirs)
    if mine.keys() != reference.keys():
        raise SystemExit("peftplug's and PaddleNLP's LoRA gradients name different parameters")
    gradient_difference = max(np.abs(mine[key] - reference[key]).max() for key in mine)
    print(f"  max |LoRA gradient(peftplug) - gradient(PaddleNLP)| = {gradient_difference:.2e}", flush=True)
    for model in (ours, theirs):
        model.clear_gradients()

    print("  training step (forward + backward + AdamW), Paddle", flush=True)
    optimizers = [
        paddle.optimizer.AdamW(learning_rate=1e-4, parameters=[p for p in model.parameters() if not p.stop_gradient])
        for model in (ours, theirs)
    ]
    units = [
        Unit("peftplug", paddle_step(ours, optimizers[0], input_ids)),
        Unit("PaddleNLP", paddle_step(theirs, optimizers[1], input_ids)),
    ]
    interleave(units, repeats, warmup, quiet)
    row = Row(
        "(a) training step: forward + backward + AdamW, Paddle",
        units[0],
        units[1],
        None,
        "peftplug/PaddleNLP <= 1.00",
        at_most(1.00),
    )
    state = {name: parameter.numpy() for name, parameter in theirs.model.named_parameters()}
    return row, state


def benchmark_torch(sizes: Sizes, state: dict, repeats: int, warmup: int, quiet: Quiet, threads: int) -> Unit:
    """For information: the same model and LoRA weights on transformers + HF PEFT (PyTorch)."""
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(threads)
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
    base = LlamaForCausalLM(config)
    base_weights, lora_weights = {}, {}
    for name, array in state.items():
        key = name.replace("llama.", "model.", 1)
        array = np.ascontiguousarray(array.T if array.ndim == 2 and "embed_tokens" not in name else array)
        if "lora_" in name:
            lora_weights[f"base_model.model.{key}.default.weight"] = torch.from_numpy(array)
        else:
            base_weights[key] = torch.from_numpy(array)
    missing, unexpected = base.load_state_dict(base_weights, strict=False)
    if unexpected or any("rotary" not in key for key in missing):
        raise SystemExit(f"torch weights do not line up: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model = peft.get_peft_model(
        base, peft.LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=TARGETS)
    )
    missing, unexpected = model.load_state_dict(lora_weights, strict=False)
    if unexpected or len(lora_weights) != sum(1 for name, _ in model.named_parameters() if "lora_" in name):
        raise SystemExit(f"LoRA weights do not line up on torch: unexpected {unexpected[:3]}")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    input_ids = torch.from_numpy(np.random.default_rng(2).integers(0, sizes.vocab, size=(sizes.batch, sizes.tokens)))

    def run(_: Any) -> None:
        """One training step on torch."""
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print("  training step, PyTorch + HF PEFT (information)", flush=True)
    unit = Unit("torch + peft", run)
    interleave([unit], repeats, warmup, quiet, reference=0)
    return unit


def report(row: Row, torch_unit: Unit | None, sizes: Sizes, args: argparse.Namespace, seconds: float) -> str:
    """The results file: settings, the table, and how to read it."""
    import paddlenlp

    command = "python benchmarks/bench_lora_paddle.py " + " ".join(sys.argv[1:])
    lines = [
        "# peftplug LoRA vs PaddleNLP LoRAModel (PaddlePaddle, CPU)",
        "",
        f"`{command.strip()}` — {datetime.datetime.now():%Y-%m-%d %H:%M}, {seconds:.0f} s in all.",
        "",
        f"paddlepaddle {paddle.__version__}, paddlenlp {paddlenlp.__version__}, Python "
        f"{platform.python_version()}, {args.threads} threads, {os.cpu_count()} CPUs, "
        f"MKL_DEBUG_CPU_TYPE={os.environ.get('MKL_DEBUG_CPU_TYPE')}.",
        f"PaddleNLP Llama: hidden {sizes.hidden}, intermediate {sizes.intermediate}, {sizes.layers} layers, "
        f"{sizes.heads} heads, vocab {sizes.vocab}, untied embeddings; batch {sizes.batch} x {sizes.tokens} "
        f"tokens. LoRA r=16, alpha 32, dropout 0 on {', '.join(TARGETS)}; identical weights in both "
        "libraries, B nonzero; logits and LoRA gradients checked equal before timing.",
        f"{args.repeats} rounds after {args.warmup} untimed ones, one run of each side per round in "
        f"alternating order; before each run garbage collection and a {args.pause:g} s pause, prolonged "
        f"(at most {args.max_wait:g} s) while other processes keep the CPUs busy or a probe runs slow. "
        "ratio: the median over rounds of peftplug's time / PaddleNLP's in the same round (judged); "
        f"cores other processes kept busy while timed (median): {row.others:.2f}; probe slowdown "
        f"before runs (median): {row.slowdown:.2f}.",
        "",
        "| operation | peftplug ms | PaddleNLP ms | ratio (median per round) | ratio of medians | target | ok |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| {row.operation} | {row.subject.median_ms:.1f} | {row.reference.median_ms:.1f} | {row.ratio:.3f} | "
        f"{row.ratio_of_medians:.3f} | {row.target} | {'yes' if row.ok else 'NO'} |",
    ]
    if torch_unit is not None:
        lines += [
            "",
            "For information, the same model, weights and batch on PyTorch (torch "
            f"{sys.modules['torch'].__version__}, transformers + HF PEFT, timed after the Paddle rounds): "
            f"{torch_unit.median_ms:.1f} ms per training step; peftplug on Paddle / peft on torch = "
            f"{row.subject.median_ms / torch_unit.median_ms:.2f} (ratio of medians).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 16; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first (default 2)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds to pause before each timed run (0.2)")
    parser.add_argument("--max-wait", type=float, default=5.0, help="longest wait (s) for a quiet machine (5)")
    parser.add_argument("--threads", type=int, default=2, help="threads for Paddle and torch (default 2)")
    parser.add_argument("--quick", action="store_true", help="small model, few repeats: a smoke test")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch information row")
    parser.add_argument(
        "--output", type=Path, default=None, help=f"results file (default {RESULTS}; none with --quick)"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 16
    sizes = QUICK if args.quick else FULL
    paddle.base.core.set_num_threads(args.threads)
    quiet = PaddleQuiet(pause=args.pause, max_wait=max(args.max_wait, args.pause))
    started = time.perf_counter()
    row, state = benchmark_paddle(sizes, args.repeats, args.warmup, quiet)
    gc.collect()
    torch_unit = None
    if not args.no_torch:
        time.sleep(1.0)
        torch_unit = benchmark_torch(
            sizes, state, args.repeats, args.warmup, Quiet(pause=args.pause, max_wait=args.max_wait), args.threads
        )
    text = report(row, torch_unit, sizes, args, time.perf_counter() - started)
    print()
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        output.with_suffix(".json").write_text(
            json.dumps(
                {unit.label: unit.seconds for unit in (row.subject, row.reference, torch_unit) if unit is not None},
                indent=1,
            )
        )
        print(f"written to {output}")
    return 0 if row.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
