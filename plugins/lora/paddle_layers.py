"""LoRA layers for PaddlePaddle: ``paddle.nn.Linear`` (fleet's tensor-parallel linears:
:mod:`~peftplug.plugins.lora.paddle_parallel_layers`) and ``paddle.nn.Conv2D``.

Paddle stores a Linear weight ``W`` as ``[in, out]`` (``y = x W + b``), and LoRA's matrices are
kept the same way, as PaddleNLP's ``LoRALinear`` keeps them, so the forward is its forward::

    y = x W + b + s * (dropout(x) A) B        A: [in, r], kaiming-uniform;  B: [r, out], zeros
    merge:  W <- W + s * A B                  s = alpha / r  (alpha / sqrt(r) with rsLoRA)

At the edge (``export_adapter`` / ``import_adapter``) they are HF PEFT's tensors:
``lora_A.weight`` ``[r, in]`` = A^T and ``lora_B.weight`` ``[out, r]`` = B^T. With ``use_dora``
an adapter also learns a magnitude per output (``lora_magnitude_vector`` ``[out]``, the same in
both layouts; the math is in :mod:`peftplug.plugins.lora.paddle_dora`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from peftplug.backends.paddle.layer import (
    PaddleAdapterLayer,
    adapter_dtype,
    copy_into,
    copy_transposed_into,
    to_numpy,
)
from peftplug.backends.paddle.tensor_parallel import is_parallel_linear
from peftplug.errors import PeftplugError
from peftplug.plugins.lora.config import LoraConfig, refuse_base_weight_init, uses_base_weight
from peftplug.plugins.lora.paddle_base_weight_init import init_from_base_weight
from peftplug.plugins.lora.paddle_dora import column_norms, dora_output


class _PaddleLoraLayer(PaddleAdapterLayer):
    """What Paddle's LoRA layers share: ``lora_A`` / ``lora_B`` parameters per adapter, ranks,
    scalings, dropout layers, and merging ``delta_weight`` in and out."""

    adapter_layer_names = ("lora_A", "lora_B")
    adapter_value_names = ("r", "lora_alpha", "scaling")

    def __init__(self, base_layer: nn.Layer):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        # Each adapter's dropout probability (0: none), applied functionally in forward: dropout
        # holds no state, and one Layer less per adapted module halves the cost of injection.
        self.lora_dropout: dict[str, float] = {}

    def _record(self, adapter_name: str, config: LoraConfig, module_name: str) -> int:
        """Record adapter ``adapter_name``'s rank, alpha and scaling, and make its dropout layer;
        returns the rank."""
        r, alpha = config.rank_and_alpha(module_name)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = alpha
        self.scaling[adapter_name] = config.scaling(r, alpha)
        self.lora_dropout[adapter_name] = config.lora_dropout
        return r

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name``, its dropout included."""
        super().delete_adapter(name)
        self.lora_dropout.pop(name, None)

    def _dropout_for(self, name: str) -> Callable[[paddle.Tensor], paddle.Tensor] | None:
        """Adapter ``name``'s dropout as a function of the input (None without dropout); it
        drops only while this layer is training."""
        p = self.lora_dropout[name]
        return functools.partial(self._dropout, p) if p > 0 else None

    def _dropout(self, p: float, x: paddle.Tensor) -> paddle.Tensor:
        return F.dropout(x, p, training=self.training)

    def delta_weight(self, adapter_name: str) -> paddle.Tensor:
        """The adapter's update of the base weight, in its layout and dtype."""
        raise NotImplementedError

    def _merge_one(self, name: str) -> None:
        """``W += delta``."""
        weight = self.base_layer.weight
        with paddle.no_grad():
            weight.set_value(weight + self.delta_weight(name))

    def _unmerge_one(self, name: str) -> None:
        """``W -= delta``."""
        weight = self.base_layer.weight
        with paddle.no_grad():
            weight.set_value(weight - self.delta_weight(name))


def _a_initializer(config: LoraConfig, r: int) -> Any:
    """A's initialiser: PaddleNLP's and HF PEFT's kaiming-uniform (a = sqrt(5), on fan_in), or
    normal with std 1/r for ``"gaussian"``."""
    if config.init_lora_weights == "gaussian":
        return nn.initializer.Normal(std=1 / r)
    return nn.initializer.KaimingUniform(negative_slope=math.sqrt(5), nonlinearity="leaky_relu")


def _b_initializer(config: LoraConfig, r: int) -> Any:
    """B's initialiser: zeros, or A's with ``init_lora_weights=False``."""
    return nn.initializer.Constant(0.0) if config.init_lora_weights is not False else _a_initializer(config, r)


class LoraLinear(_PaddleLoraLayer):
    """LoRA around ``paddle.nn.Linear``; parameters ``lora_A.<adapter>`` ``[in, r]`` and
    ``lora_B.<adapter>`` ``[r, out]`` (Paddle's layout), and ``lora_magnitude_vector.<adapter>``
    ``[out]`` for DoRA adapters."""

    adapter_layer_names = ("lora_A", "lora_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Linear):
        super().__init__(base_layer)
        self.in_features, self.out_features = self._base_features(base_layer)
        self.lora_magnitude_vector: dict | nn.ParameterDict = {}  # a ParameterDict from the first DoRA adapter
        self._dora_norms: dict[str, paddle.Tensor] = {}  # n of each merged DoRA adapter, for unmerge
        # What forward applies, precomputed by _adapters_changed: (A, B, scaling, dropout) when
        # the adapters share the base weight's dtype; _cast_plan otherwise (half-precision bases);
        # with a DoRA adapter active, _ordered: every active adapter's name, in order.
        self._plan: tuple[tuple[Any, Any, float, Any], ...] = ()
        self._cast_plan: tuple[tuple[Any, Any, float, Any], ...] = ()
        self._ordered: tuple[str, ...] = ()
        # A plain nn.Linear is run as F.linear on its parameters (one layer call less).
        self._plain_base = type(base_layer) is nn.Linear

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name`` with its rank, scaling, dropout and initial weights."""
        r = self._record(adapter_name, config, module_name)
        dtype = self._adapter_dtype()
        self.lora_A[adapter_name] = self.create_parameter(
            [self.in_features, r], dtype=dtype, is_bias=False, default_initializer=_a_initializer(config, r)
        )
        self.lora_B[adapter_name] = self.create_parameter(
            [r, self.out_features], dtype=dtype, is_bias=False, default_initializer=_b_initializer(config, r)
        )
        if uses_base_weight(config.init_lora_weights):
            init_from_base_weight(self, adapter_name, config.init_lora_weights, module_name)
        if config.use_dora:
            with paddle.no_grad():
                magnitude = column_norms(self.base_layer.weight.astype(dtype), self.delta_weight(adapter_name, dtype))
            if not isinstance(self.lora_magnitude_vector, nn.ParameterDict):
                self.lora_magnitude_vector = nn.ParameterDict()
            self.lora_magnitude_vector[adapter_name] = self.create_parameter(
                magnitude.shape, dtype=dtype, is_bias=False, default_initializer=nn.initializer.Assign(magnitude)
            )
        self._adapters_changed()

    def _base_features(self, base_layer: nn.Layer) -> tuple[int, int]:
        """``(in, out)`` of the base layer (its ``[in, out]`` weight's shape)."""
        return tuple(base_layer.weight.shape)

    def _base_dtype(self) -> Any:
        """The dtype the base layer computes in (its weight's)."""
        return self.base_layer.weight.dtype

    def _adapter_dtype(self) -> Any:
        """The dtype of new adapters (float32 for a half-precision base)."""
        return adapter_dtype(self.base_layer.weight)

    def _adapters_changed(self) -> None:
        active = self._active_unmerged()
        self._ordered = tuple(active) if any(n in self.lora_magnitude_vector for n in active) else ()
        plan = tuple((self.lora_A[n], self.lora_B[n], self.scaling[n], self._dropout_for(n)) for n in active)
        dtype = self._base_dtype()
        self._plan = tuple(step for step in plan if step[0].dtype == dtype)
        self._cast_plan = tuple(step for step in plan if step[0].dtype != dtype)

    def delta_weight(self, adapter_name: str, dtype: Any = None) -> paddle.Tensor:
        """``s * A B`` in the base weight's layout ``[in, out]`` and ``dtype`` (the weight's by default)."""
        a, b = self.lora_A[adapter_name], self.lora_B[adapter_name]
        delta = (a @ b) * self.scaling[adapter_name]
        return delta.astype(dtype or self._base_dtype())

    def _merge_one(self, name: str) -> None:
        """``W += s * A B``; for DoRA ``W <- (W + s * A B) m / n``, keeping ``n`` for unmerge."""
        if name not in self.lora_magnitude_vector:
            return super()._merge_one(name)
        if self.merged_adapters:
            raise PeftplugError(
                f"cannot merge DoRA adapter {name!r} while {self.merged_adapters} is merged into the same layer: "
                "its norms are of the unmerged weight; unmerge first, or merge the DoRA adapter alone"
            )
        weight = self.base_layer.weight
        with paddle.no_grad():
            delta = self.delta_weight(name)
            norm = column_norms(weight, delta)
            self._dora_norms[name] = norm
            weight.set_value((weight + delta) * self._dora_factor(name, norm))

    def _unmerge_one(self, name: str) -> None:
        """``W -= s * A B``; for DoRA ``W <- W n / m - s * A B``."""
        if name in self.lora_magnitude_vector:
            weight = self.base_layer.weight
            with paddle.no_grad():
                weight.set_value(weight / self._dora_factor(name, self._dora_norms.pop(name)))
        super()._unmerge_one(name)

    def _dora_factor(self, name: str, norm: paddle.Tensor) -> paddle.Tensor:
        """``m / n`` in the base weight's dtype, one per output column."""
        return (self.lora_magnitude_vector[name] / norm).astype(self._base_dtype())

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """``x W + b + (s * dropout(x) A) B`` for each active, unmerged adapter.

        The scale multiplies the ``[tokens, r]`` hidden, not the ``[tokens, out]`` product, and
        the product is added into ``F.linear``'s fresh output in place by :func:`_add_into`: the
        adapter path allocates one ``[tokens, out]`` tensor (``h B``) and nothing of that size in
        backward (``tests/methods/lora/test_lora_work_paddle.py`` counts it)."""
        base = self.base_layer
        if self._plain_base:
            result = F.linear(x, base.weight, base.bias)
        else:
            result = base(x, *args, **kwargs)
        if self._ordered:
            return self._forward_in_order(x, result)
        for a, b, scaling, dropout in self._plan:
            delta = ((x if dropout is None else dropout(x)) @ a * scaling) @ b
            # a wrapped layer's output may be saved for its own backward: only F.linear's is ours to change
            result = _add_into(result, delta) if self._plain_base else result + delta
        for a, b, scaling, dropout in self._cast_plan:
            hidden = x.astype(a.dtype)
            hidden = hidden if dropout is None else dropout(hidden)
            result = result + ((hidden @ a * scaling) @ b).astype(result.dtype)
        return result

    def mixed_batch_forward(self, row_adapters: list[str], x: paddle.Tensor, *args: Any, **kwargs: Any) -> Any:
        """A batch of several plain LoRA adapters in two batched products (the torch layer's
        math in Paddle's layout)::

            y_i = x_i W + b + s_i x_i A_i B_i      (row i, adapter i; A_i B_i = 0 on "__base__" rows)

        each row's ``A_i`` ``[in, r]`` and ``s_i B_i`` ``[r, out]`` gathered once per batch
        (zero-padded to the largest rank). DoRA adapters and one-adapter batches take the
        per-adapter sub-batches."""
        groups = self._rows_by_adapter(row_adapters, x.shape[0])
        lora = [name for name in groups if name != "__base__"]
        if len(groups) == 1 or any(name in self.lora_magnitude_vector for name in lora):
            return super().mixed_batch_forward(row_adapters, x, *args, **kwargs)
        a_rows, b_rows = self._row_weights(row_adapters, lora)
        base = self.base_layer
        result = F.linear(x, base.weight, base.bias) if self._plain_base else base(x, *args, **kwargs)
        tokens = x.reshape([x.shape[0], -1, x.shape[-1]]).astype(a_rows.dtype)
        delta = paddle.bmm(paddle.bmm(tokens, a_rows), b_rows)
        return result + delta.reshape(result.shape).astype(result.dtype)

    def _row_weights(self, row_adapters: list[str], lora: list[str]) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Each row's ``A`` ``[rows, in, r]`` and ``s B`` ``[rows, r, out]`` (zeros for the base)."""
        rank = max(self.lora_A[name].shape[1] for name in lora)
        dtype = self.lora_A[lora[0]].dtype
        a_stack = paddle.stack(
            [_zero_padded(self.lora_A[n], self.in_features, rank) for n in lora]
            + [paddle.zeros([self.in_features, rank], dtype=dtype)]
        )
        b_stack = paddle.stack(
            [_zero_padded(self.lora_B[n] * self.scaling[n], rank, self.out_features) for n in lora]
            + [paddle.zeros([rank, self.out_features], dtype=dtype)]
        )
        slots = {name: slot for slot, name in enumerate(lora)}
        index = paddle.to_tensor([slots.get(name, len(lora)) for name in row_adapters], dtype="int64")
        return paddle.index_select(a_stack, index, axis=0), paddle.index_select(b_stack, index, axis=0)

    def _forward_in_order(self, x: paddle.Tensor, result: paddle.Tensor) -> paddle.Tensor:
        """The adapters one by one in HF PEFT's order, for a DoRA adapter takes ``x W`` from the
        output so far (less the bias) when its dropout is off, and recomputes it when on."""
        for name in self._ordered:
            a, b, scaling = self.lora_A[name], self.lora_B[name], self.scaling[name]
            dropout = self._dropout_for(name)
            hidden = x.astype(a.dtype)
            if name not in self.lora_magnitude_vector:
                hidden = hidden if dropout is None else dropout(hidden)
                result = result + ((hidden @ a * scaling) @ b).astype(result.dtype)
                continue
            base_result = None
            if dropout is None or not self.training:
                bias = self.base_layer.bias
                base_result = result if bias is None else result - bias
            else:
                hidden = dropout(hidden)
            magnitude = self.lora_magnitude_vector[name]
            delta = dora_output(hidden, base_result, self.base_layer.weight, a, b, magnitude, scaling)
            result = result + delta.astype(result.dtype)
        return result

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``lora_A.weight`` ``[r, in]`` and ``lora_B.weight`` ``[out, r]`` (HF PEFT's layout),
        and for DoRA ``lora_magnitude_vector`` ``[out]``."""
        tensors = {
            "lora_A.weight": np.ascontiguousarray(to_numpy(self.lora_A[name]).T),
            "lora_B.weight": np.ascontiguousarray(to_numpy(self.lora_B[name]).T),
        }
        if name in self.lora_magnitude_vector:
            tensors["lora_magnitude_vector"] = to_numpy(self.lora_magnitude_vector[name])
        return tensors

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``lora_A.weight`` / ``lora_B.weight`` (HF PEFT's layout) and DoRA's magnitude
        in, checking shapes."""
        holders = {"lora_A.weight": self.lora_A[name], "lora_B.weight": self.lora_B[name]}
        taken = set(holders) & set(tensors)
        for suffix in sorted(taken):
            copy_transposed_into(holders[suffix], tensors[suffix], key_prefix + suffix)
        if name in self.lora_magnitude_vector and "lora_magnitude_vector" in tensors:
            copy_into(
                self.lora_magnitude_vector[name], tensors["lora_magnitude_vector"], key_prefix + "lora_magnitude_vector"
            )
            taken.add("lora_magnitude_vector")
        return taken

    def extra_repr(self) -> str:
        """Sizes and ranks, for ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}"


class LoraConv2D(_PaddleLoraLayer):
    """LoRA around ``paddle.nn.Conv2D``, as HF PEFT's around ``nn.Conv2d``: ``conv(x) + s *
    B(A(dropout(x)))``, A a convolution with the base's kernel, stride and padding into ``r``
    channels (``lora_A.<adapter>`` ``[r, in, kh, kw]``), B a 1x1 convolution out
    (``lora_B.<adapter>`` ``[out, r, 1, 1]``). Paddle's kernels have torch's layout, so the files
    hold these tensors as they are."""

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name``; grouped or dilated convolutions, NHWC and DoRA are refused."""
        base = self.base_layer
        plain = base._groups == 1 and list(base._dilation) == [1, 1] and base._data_format == "NCHW"
        if not plain or config.use_dora:
            found = (
                "use_dora=True"
                if config.use_dora
                else (f"groups={base._groups}, dilation={list(base._dilation)}, data_format={base._data_format}")
            )
            raise PeftplugError(
                f"LoRA on {module_name} (Conv2D, {found}): peftplug's Conv2D LoRA takes plain LoRA on ungrouped, "
                "undilated NCHW convolutions; leave this module out of target_modules"
            )
        refuse_base_weight_init(
            config.init_lora_weights, module_name, "a Conv2D; PiSSA and OLoRA initialise Linear layers only"
        )
        r = self._record(adapter_name, config, module_name)
        dtype = adapter_dtype(base.weight)
        out_channels, in_channels, *kernel = base.weight.shape
        self.lora_A[adapter_name] = self.create_parameter(
            [r, in_channels, *kernel], dtype=dtype, is_bias=False, default_initializer=_a_initializer(config, r)
        )
        self.lora_B[adapter_name] = self.create_parameter(
            [out_channels, r, 1, 1], dtype=dtype, is_bias=False, default_initializer=_b_initializer(config, r)
        )

    def delta_weight(self, adapter_name: str) -> paddle.Tensor:
        """``s * B o A`` as an ``[out, in, kh, kw]`` kernel, in the base weight's dtype."""
        a, b = self.lora_A[adapter_name], self.lora_B[adapter_name]
        if tuple(a.shape[2:]) == (1, 1):
            delta = (b[:, :, 0, 0] @ a[:, :, 0, 0]).unsqueeze([2, 3])
        else:
            delta = F.conv2d(a.transpose([1, 0, 2, 3]), b).transpose([1, 0, 2, 3])
        return (delta * self.scaling[adapter_name]).astype(self.base_layer.weight.dtype)

    def forward(self, x: paddle.Tensor, *args: Any, **kwargs: Any) -> paddle.Tensor:
        """``conv(x) + s * B(A(dropout(x)))`` for each active, unmerged adapter."""
        base = self.base_layer
        result = base(x, *args, **kwargs)
        for name in self._active_unmerged():
            a, b = self.lora_A[name], self.lora_B[name]
            dropout = self._dropout_for(name)
            hidden = x.astype(a.dtype)
            hidden = hidden if dropout is None else dropout(hidden)
            path = F.conv2d(F.conv2d(hidden, a, stride=base._stride, padding=base._padding), b)
            result = result + (path * self.scaling[name]).astype(result.dtype)
        return result

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``lora_A.weight`` ``[r, in, kh, kw]`` and ``lora_B.weight`` ``[out, r, 1, 1]``."""
        return {"lora_A.weight": to_numpy(self.lora_A[name]), "lora_B.weight": to_numpy(self.lora_B[name])}

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``lora_A.weight`` / ``lora_B.weight`` in, checking shapes."""
        holders = {"lora_A.weight": self.lora_A[name], "lora_B.weight": self.lora_B[name]}
        taken = set(holders) & set(tensors)
        for suffix in sorted(taken):
            copy_into(holders[suffix], tensors[suffix], key_prefix + suffix)
        return taken


class _AddInto(PyLayer):
    """``result += delta`` in place, with the output's gradient handed to both, as it is.

    Paddle's ``add_`` gives its second operand a copy of the output's gradient (its
    ``add_grad`` shares the buffer with the first operand only): a ``[tokens, out]`` tensor per
    layer and step that this node does not allocate. Neither receiver changes the shared
    gradient: ``result`` is ``F.linear``'s output and ``delta`` a product's, each with no other
    consumer, so no gradient is accumulated into it."""

    @staticmethod
    def forward(ctx: Any, result: paddle.Tensor, delta: paddle.Tensor) -> paddle.Tensor:
        """``result`` with ``delta`` added to it."""
        return result.add_(delta)

    @staticmethod
    def backward(ctx: Any, grad: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """The output's gradient for both operands."""
        return grad, grad


def _add_into(result: paddle.Tensor, delta: paddle.Tensor) -> paddle.Tensor:
    """``result + delta``, reusing the buffers of ``F.linear``'s output ``result`` and of the
    product ``delta`` (each used nowhere else). Where ``result`` takes no gradient (inference, a
    first layer whose input takes none) ``delta.add_(result)`` alone does: ``add_`` shares the
    output's gradient with its first operand."""
    if result.stop_gradient:
        return delta.add_(result)
    return _AddInto.apply(result, delta)


def _zero_padded(matrix: paddle.Tensor, rows: int, columns: int) -> paddle.Tensor:
    """``matrix`` grown to ``[rows, columns]`` with zeros below and to the right."""
    if matrix.shape[1] < columns:
        matrix = paddle.concat(
            [matrix, paddle.zeros([matrix.shape[0], columns - matrix.shape[1]], matrix.dtype)], axis=1
        )
    if matrix.shape[0] < rows:
        matrix = paddle.concat([matrix, paddle.zeros([rows - matrix.shape[0], columns], matrix.dtype)], axis=0)
    return matrix


def wrap(layer: nn.Layer, name: str, config: LoraConfig, adapter_name: str) -> nn.Layer | None:
    """The LoRA layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported."""
    if isinstance(layer, _PaddleLoraLayer):
        lora = layer
    elif isinstance(layer, nn.Linear):
        lora = LoraLinear(layer)
    elif isinstance(layer, nn.Conv2D):
        lora = LoraConv2D(layer)
    elif is_parallel_linear(layer):
        from peftplug.plugins.lora.paddle_parallel_layers import wrap_parallel

        lora = wrap_parallel(layer)
    else:
        return None
    lora.update_layer(adapter_name, config, name)
    return lora


def svd(matrix: np.ndarray, full_matrices: bool, driver: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U, S, Vh`` of ``matrix`` by ``paddle.linalg.svd`` (``driver``, a cuSOLVER choice, is torch's only)."""
    u, singular, vh = paddle.linalg.svd(paddle.to_tensor(matrix), full_matrices=full_matrices)
    return u.numpy(), singular.numpy(), vh.numpy()
