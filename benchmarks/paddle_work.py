"""The work of one Paddle (dygraph, CPU) step, counted: matrix-product FLOPs, operator calls,
bytes allocated and peak live bytes. Shared by ``bench_overheads_paddle.py`` and the counted
LoRA test (``tests/methods/lora/test_lora_work_paddle.py``).

How each is counted (paddle 3.3.1 on CPU):

- operator calls: ``paddle.profiler.Profiler`` on the CPU target records one ``Operator`` event
  per forward operator (``"matmul dygraph"``) and per backward node (``"Global_MatmulGradNode"``),
  optimizer updates included; they are counted by name. (Its ``record_shapes`` records nothing
  in dygraph mode, and its FLOPs column reads 0, hence the next item.)
- FLOPs: the matrix products (``_C_ops.matmul``, ``_C_ops.linear``, ``Tensor.__matmul__``) are
  wrapped while counting; each adds ``2 * numel(out) * K`` forward and, when autograd records
  it, the same again for each of its two operands that requires a gradient (the backward
  product that gives that operand's gradient).
- bytes allocated: with ``profile_memory=True`` the profiler records every allocation of the CPU
  allocator with its size; their sum is what the step allocated (outputs and kernels' scratch).
- peak live bytes: ``core.host_memory_stat_peak_value("Allocated", 0)``, reset before the step,
  less the bytes live when the step began.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paddle
from paddle import _C_ops, profiler
from paddle.profiler.profiler_statistic import TracerEventType, TracerMemEventType


@dataclass
class StepWork:
    """What one step did."""

    flops: int = 0
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    allocated_bytes: int = 0
    peak_live_bytes: int = 0

    @property
    def total_calls(self) -> int:
        """Operator calls of every kind."""
        return sum(self.calls.values())

    def __sub__(self, other: StepWork) -> StepWork:
        """The work this step did over ``other``'s (call counts may go negative)."""
        calls = collections.Counter(self.calls)
        calls.subtract(other.calls)
        return StepWork(
            self.flops - other.flops,
            collections.Counter({name: count for name, count in calls.items() if count}),
            self.allocated_bytes - other.allocated_bytes,
            self.peak_live_bytes - other.peak_live_bytes,
        )


def _product_flops(out: paddle.Tensor, inner: int, operands: tuple[paddle.Tensor, ...]) -> int:
    """Forward and backward FLOPs of a product with output ``out`` and contracted size ``inner``:
    backward only where autograd records it (not under ``no_grad``, nor in a ``PyLayer``, whose
    backward products are counted as they run)."""
    once = 2 * math.prod(out.shape) * inner
    if not paddle.is_grad_enabled():
        return once
    return once * (1 + sum(1 for operand in operands if not operand.stop_gradient))


@contextlib.contextmanager
def counting_matmul_flops(work: StepWork) -> Iterator[None]:
    """Add the FLOPs of every matrix product called inside to ``work.flops``."""
    originals = {"matmul": _C_ops.matmul, "linear": _C_ops.linear, "__matmul__": paddle.Tensor.__matmul__}

    def matmul(x, y, transpose_x=False, transpose_y=False, *rest):
        out = originals["matmul"](x, y, transpose_x, transpose_y, *rest)
        work.flops += _product_flops(out, x.shape[-2] if transpose_x else x.shape[-1], (x, y))
        return out

    def linear(x, weight, bias):
        out = originals["linear"](x, weight, bias)
        work.flops += _product_flops(out, x.shape[-1], (x, weight))
        return out

    def tensor_matmul(x, y):
        out = originals["__matmul__"](x, y)
        work.flops += _product_flops(out, x.shape[-1], (x, y))
        return out

    _C_ops.matmul, _C_ops.linear, paddle.Tensor.__matmul__ = matmul, linear, tensor_matmul
    try:
        yield
    finally:
        _C_ops.matmul, _C_ops.linear = originals["matmul"], originals["linear"]
        paddle.Tensor.__matmul__ = originals["__matmul__"]


def _events(node: Any) -> Iterator[Any]:
    """``node`` and every event under it in the profiler's tree."""
    yield node
    for child in node.children_node + node.runtime_node:
        yield from _events(child)


def _add_profile(work: StepWork, result: Any) -> None:
    """Operator events and allocations of a profiler result, into ``work``."""
    for root in result.get_data().values():
        for event in _events(root):
            if event.type == TracerEventType.Operator:
                work.calls[event.name.removesuffix(" dygraph")] += 1
            work.allocated_bytes += sum(
                memory.increase_bytes for memory in event.mem_node if memory.type == TracerMemEventType.Allocate
            )


def count_step(step: Callable[[], Any]) -> StepWork:
    """The work of one call of ``step`` (run it once uncounted first, so that lazily made state
    such as optimizer moments is not counted)."""
    work = StepWork()
    core = paddle.base.core
    live_before = core.host_memory_stat_current_value("Allocated", 0)
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    recorder = profiler.Profiler(
        targets=[profiler.ProfilerTarget.CPU], profile_memory=True, on_trace_ready=lambda _: None
    )
    with counting_matmul_flops(work):
        recorder.start()
        try:
            step()
        finally:
            recorder.stop()
    work.peak_live_bytes = core.host_memory_stat_peak_value("Allocated", 0) - live_before
    _add_profile(work, recorder.profiler_result)
    return work


def lora_shapes(model: Any) -> list[tuple[int, int, int]]:
    """``(in, out, r)`` of each LoRA module of ``model``, peftplug's or PaddleNLP's (both keep
    ``A`` ``[in, r]`` and ``B`` ``[r, out]``)."""
    a_shapes, b_shapes = [], []
    for name, parameter in model.named_parameters():
        if "lora_A" in name:
            a_shapes.append(parameter.shape)
        elif "lora_B" in name:
            b_shapes.append(parameter.shape)
    return [(a[0], b[1], a[1]) for a, b in zip(a_shapes, b_shapes, strict=True)]


def lora_minimum(shapes: list[tuple[int, int, int]], tokens: int, bytes_per_value: int = 4) -> StepWork:
    """The analytic minimum of what LoRA adds to a frozen base's training step (forward,
    backward with the base's input gradient, AdamW), summed over modules ``(in, out, r)`` run
    on ``tokens`` rows. Per module, with ``h = x A`` and ``y = x W + (s h) B``:

    - FLOPs ``6 T r (in + out)``: forward ``x A`` ``[T, in] x [in, r]`` and ``(s h) B``
      ``[T, r] x [r, out]`` (``2 T r (in + out)``); backward ``dB = (s h)^T dy``,
      ``d(s h) = dy B^T``, ``dA = x^T dh``, ``dx += dh A^T`` (``4 T r (in + out)``);
    - operator calls 12: forward ``x A``, the scale, ``(s h) B``, the add; a backward node for
      each (a product's node gives both its operands' gradients); the accumulation into ``A``'s
      and ``B``'s gradients; one AdamW update each;
    - bytes of new tensors ``4 T r + T out + T in + r (in + out)`` values: ``h``, ``s h`` and
      ``(s h) B`` forward (the add is into the base's output), ``d(s h)``, ``dh``, the ``dx``
      contribution, ``dA`` and ``dB`` backward (the add passes ``dy`` through; AdamW works in
      place);
    - peak live bytes ``T r`` values: ``s h``, which ``(s h) B``'s backward needs, is live from
      the forward to the module's backward, the base's largest moment included.
    """
    work = StepWork()
    for in_features, out_features, r in shapes:
        work.flops += 6 * tokens * r * (in_features + out_features)
        work.calls["LoRA module"] += 12
        values = 4 * tokens * r + tokens * (in_features + out_features) + r * (in_features + out_features)
        work.allocated_bytes += bytes_per_value * values
        work.peak_live_bytes += bytes_per_value * tokens * r
    return work


def embedding_output_takes_gradient(model: Any) -> None:
    """Make the output of ``model``'s ``embed_tokens`` layer take a gradient, so that backward
    runs through every layer of a frozen model as it does through a LoRA model's."""

    def takes_gradient(layer: Any, inputs: Any, output: paddle.Tensor) -> paddle.Tensor:
        output.stop_gradient = False
        return output

    embedding = next(layer for name, layer in model.named_sublayers() if name.endswith("embed_tokens"))
    embedding.register_forward_post_hook(takes_gradient)


def training_step(model: Any, input_ids: paddle.Tensor, optimizer: Any = None) -> Callable[[], None]:
    """Forward with labels and backward; with ``optimizer``, its step and ``clear_grad`` too."""

    def step() -> None:
        loss = model(input_ids=input_ids, labels=input_ids)[0]
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.clear_grad()
        float(loss)

    return step
