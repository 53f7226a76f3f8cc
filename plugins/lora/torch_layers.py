"""LoRA layers for PyTorch: Linear (and GPT-2's Conv1D), Conv2d and Embedding.

Math, for a base weight ``W`` (``[out, in]``), rank ``r``, and ``s = alpha / r``
(``alpha / sqrt(r)`` with rsLoRA)::

    y = W x + b + s * B (A dropout(x))        A: [r, in], kaiming-uniform;  B: [out, r], zeros
    merge:  W <- W + s * B A                  (transposed for Conv1D, whose W is [in, out])

With ``use_dora`` a Linear (or Conv1D) adapter also learns a magnitude per output row
(``lora_magnitude_vector``; the math is in :mod:`peftplug.plugins.lora.torch_dora`).

Parameter names and shapes are HF PEFT's (``lora_A.<adapter>.weight`` ...), so state dicts
and saved files are interchangeable with it.

Tensor parallelism (a Linear sharded by ``parallelize_module``, its weight a DTensor): A and B are
DTensors following the weight's axes. Column-parallel (``W`` ``Shard(0)``, output axis): A whole,
B ``Shard(0)``; row-parallel (``W`` ``Shard(1)``, input axis): A ``Shard(1)``, B whole. The layer
takes the base layer's parallel hooks, so the adapter's path is computed on the same DTensor
input and added to the base output in its placement before the style's output hook
(see :mod:`peftplug.backends.torch.tensor_parallel`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from peftplug.backends.torch.dropout import dropout_module
from peftplug.backends.torch.layer import (
    LOW_PRECISION,
    TorchAdapterLayer,
    adapter_dtype,
    copy_into,
    linear_features,
    to_numpy,
)
from peftplug.backends.torch.ops import is_conv1d
from peftplug.backends.torch.tensor_parallel import adopt_parallel_hooks, dtensor_parameter, is_dtensor
from peftplug.errors import PeftplugError
from peftplug.plugins.lora.config import LoraConfig, refuse_base_weight_init, uses_base_weight
from peftplug.plugins.lora.torch_base_weight_init import init_from_base_weight
from peftplug.plugins.lora.torch_dora import DoraMagnitude, dora_output, row_norms
from peftplug.plugins.lora.torch_linear_function import LoraLinearFunction


def _new_linear(in_features: int, out_features: int, device: torch.device, dtype: torch.dtype) -> nn.Linear:
    """A bias-free ``nn.Linear``, initialised by ``nn.Linear`` itself except on the meta device.

    Off meta, ``nn.Linear``'s own init runs (LoRA re-initialises A and B after it) so that the
    random stream advances exactly as in HF PEFT: the same seed gives the same adapter. On meta
    there is nothing to initialise, yet that init costs a third of a 7B model's injection time.
    """
    if device.type != "meta":
        return nn.Linear(in_features, out_features, bias=False, device=device, dtype=dtype)
    linear = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(linear)
    linear.in_features, linear.out_features = in_features, out_features
    linear.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
    linear.register_parameter("bias", None)
    return linear


class LoraLayer(TorchAdapterLayer):
    """What LoRA's Linear and Embedding share: ranks, scalings, dropout, merge bookkeeping."""

    adapter_value_names = ("r", "lora_alpha", "scaling")

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}

    def _record(self, adapter_name: str, config: LoraConfig, module_name: str) -> int:
        r, alpha = config.rank_and_alpha(module_name)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = alpha
        self.scaling[adapter_name] = config.scaling(r, alpha)
        return r

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``s * B A`` in the base weight's layout and dtype."""
        raise NotImplementedError

    def _merge_one(self, name: str) -> None:
        """``W += s * B A``."""
        with torch.no_grad():
            self.base_layer.weight.add_(self.delta_weight(name))

    def _unmerge_one(self, name: str) -> None:
        """``W -= s * B A``."""
        with torch.no_grad():
            self.base_layer.weight.sub_(self.delta_weight(name))


class _ModulePairLayer(LoraLayer):
    """What LoRA's Linear and Conv2d share: per adapter, ``lora_A`` and ``lora_B`` modules of the
    base layer's kind (HF PEFT's names and shapes), their dropout, their initialisation and their
    files; and ``lora_magnitude_vector`` for DoRA adapters (Linear only)."""

    adapter_layer_names = ("lora_A", "lora_B", "lora_magnitude_vector")
    adapter_value_names = LoraLayer.adapter_value_names + ("lora_dropout",)

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ModuleDict()

    def _add_pair(self, adapter_name: str, config: LoraConfig, a: nn.Module, b: nn.Module) -> None:
        """Make ``a`` and ``b`` adapter ``adapter_name``'s, with the config's dropout, and
        initialise them as HF PEFT does: A kaiming-uniform (or normal, std 1/r, for
        ``"gaussian"``), B zeros; ``init_lora_weights=False`` keeps the modules' own init."""
        self.lora_A[adapter_name] = a
        self.lora_B[adapter_name] = b
        self.lora_dropout[adapter_name] = dropout_module(config.lora_dropout)
        init = config.init_lora_weights
        if uses_base_weight(init):
            return  # the layer derives A and B from its base weight (HF PEFT runs no other init first)
        if init is not False and a.weight.device.type != "meta":
            with torch.no_grad():
                if init == "gaussian":
                    nn.init.normal_(a.weight, std=1 / self.r[adapter_name])
                else:
                    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
                nn.init.zeros_(b.weight)

    def _holders(self, name: str) -> dict[str, torch.Tensor]:
        holders = {"lora_A.weight": self.lora_A[name].weight, "lora_B.weight": self.lora_B[name].weight}
        if name in self.lora_magnitude_vector:
            holders["lora_magnitude_vector"] = self.lora_magnitude_vector[name].weight
        return holders

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``lora_A.weight``, ``lora_B.weight`` and, for DoRA, ``lora_magnitude_vector`` (without
        the zero padding a hot-swap preparation added past the adapter's rank)."""
        tensors = {suffix: to_numpy(tensor) for suffix, tensor in self._holders(name).items()}
        rank = self.r[name]
        if tensors["lora_A.weight"].ndim == 2 and tensors["lora_A.weight"].shape[0] > rank:
            tensors["lora_A.weight"] = tensors["lora_A.weight"][:rank]
            tensors["lora_B.weight"] = tensors["lora_B.weight"][:, :rank]
        return tensors

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``lora_A.weight`` / ``lora_B.weight`` (and DoRA's magnitude) in, checking shapes."""
        holders = self._holders(name)
        taken = set(holders) & set(tensors)
        for suffix in sorted(taken):
            copy_into(holders[suffix], tensors[suffix], key_prefix + suffix)
        return taken


class LoraLinear(_ModulePairLayer):
    """LoRA around ``nn.Linear`` or transformers' ``Conv1D`` (``fan_in_fan_out``): ``lora_A.weight``
    ``[r, in]``, ``lora_B.weight`` ``[out, r]``; DoRA adapters also ``lora_magnitude_vector`` ``[out]``."""

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool):
        super().__init__(base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        self.in_features, self.out_features = linear_features(base_layer, fan_in_fan_out)
        self._dora_norms: dict[str, torch.Tensor] = {}  # n of each merged DoRA adapter, for unmerge
        self._row_weights_cache: tuple | None = None  # the last mixed batch's gathered weights
        adopt_parallel_hooks(self, base_layer)

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name`` with its rank, scaling, dropout and initial weights."""
        weight = self.base_layer.weight
        if uses_base_weight(config.init_lora_weights) and is_dtensor(weight):
            raise PeftplugError(
                f"init_lora_weights={config.init_lora_weights!r} on {module_name}: a sharded (DTensor: tensor parallel "
                "or fully_shard) layer is not supported, as PiSSA and OLoRA factorise the whole weight; call "
                "get_peft_model before sharding"
            )
        if config.use_dora and is_dtensor(weight):
            raise PeftplugError(
                f"DoRA (use_dora=True) on {module_name}: a sharded (DTensor: tensor parallel or fully_shard) layer "
                "is not supported, as its row norms would need the whole weight; call get_peft_model before "
                "fully_shard, or use plain LoRA"
            )
        r = self._record(adapter_name, config, module_name)
        factory = {"device": weight.device, "dtype": adapter_dtype(weight)}
        a, b = _new_linear(self.in_features, r, **factory), _new_linear(r, self.out_features, **factory)
        self._add_pair(adapter_name, config, a, b)
        if self.is_tensor_parallel():
            a.weight = dtensor_parameter(a.weight.data, weight, {1: 1})
            b.weight = dtensor_parameter(b.weight.data, weight, {0: 0})
        if uses_base_weight(config.init_lora_weights) and weight.device.type != "meta":
            init_from_base_weight(self, adapter_name, config.init_lora_weights, module_name)
        if config.use_dora:
            with torch.no_grad():
                delta = self.delta_weight(adapter_name, factory["dtype"], layout=False)
                magnitude = row_norms(self._weight_out_in().to(factory["dtype"]), delta)
            self.lora_magnitude_vector[adapter_name] = DoraMagnitude(magnitude)

    def _weight_out_in(self) -> torch.Tensor:
        """The base weight as ``[out, in]`` (a view: transposed for Conv1D)."""
        weight = self.base_layer.weight
        return weight.T if self.fan_in_fan_out else weight

    def adapter_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """``lora_A.weight`` ``[r, in]`` and ``lora_B.weight`` ``[out, r]`` (DTensors when sharded)."""
        return {"lora_A.weight": self.lora_A[name].weight, "lora_B.weight": self.lora_B[name].weight}

    def delta_weight(self, adapter_name: str, dtype: torch.dtype | None = None, layout: bool = True) -> torch.Tensor:
        """``s * B A`` in ``dtype`` (the base weight's by default), transposed for Conv1D unless
        ``layout`` is False (then ``[out, in]``); computed in float32 for half-precision bases."""
        a = self.lora_A[adapter_name].weight
        b = self.lora_B[adapter_name].weight
        delta = (b.float() @ a.float() if a.dtype in LOW_PRECISION else b @ a) * self.scaling[adapter_name]
        weight = self.base_layer.weight
        if is_dtensor(delta) and delta.placements != weight.placements:
            delta = delta.redistribute(weight.device_mesh, weight.placements)
        return (delta.T if self.fan_in_fan_out and layout else delta).to(dtype or weight.dtype)

    def _merge_one(self, name: str) -> None:
        """``W += s * B A``; for DoRA ``W <- (m / n) (W + s * B A)``, keeping ``n`` for unmerge."""
        if name not in self.lora_magnitude_vector:
            return super()._merge_one(name)
        if self.merged_adapters:
            raise PeftplugError(
                f"cannot merge DoRA adapter {name!r} while {self.merged_adapters} is merged into the same layer: its "
                "norms are of the unmerged weight; unmerge first, or merge the DoRA adapter alone"
            )
        weight = self.base_layer.weight
        with torch.no_grad():
            delta = self.delta_weight(name)
            norm = row_norms(self._weight_out_in(), delta.T if self.fan_in_fan_out else delta)
            self._dora_norms[name] = norm
            weight.copy_(self._dora_factor(name, norm) * (weight + delta))

    def _unmerge_one(self, name: str) -> None:
        """``W -= s * B A``; for DoRA ``W <- W n / m - s * B A``."""
        if name not in self.lora_magnitude_vector:
            return super()._unmerge_one(name)
        weight = self.base_layer.weight
        with torch.no_grad():
            weight.copy_(weight / self._dora_factor(name, self._dora_norms.pop(name)) - self.delta_weight(name))

    def _dora_factor(self, name: str, norm: torch.Tensor) -> torch.Tensor:
        """``m / n`` shaped to scale the base weight's output rows (columns for Conv1D)."""
        factor = (self.lora_magnitude_vector[name].weight / norm).view(-1, 1)
        return factor.T if self.fan_in_fan_out else factor

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``base(x) + s * B(A(dropout(x)))`` for each active, unmerged adapter."""
        active = self._active_unmerged()
        if not active:
            return self.base_layer(x, *args, **kwargs)
        if self._peftplug_adopted_hooks and is_dtensor(x):
            return self._forward_dtensor(x, active, *args, **kwargs)
        # Work on [tokens, features] rows: the base layer's output is then a fresh 2-D tensor,
        # and each B product is accumulated straight into it (one fused matmul-add, no
        # [tokens, out] temporaries). Done on a view of a 3-D output instead, autograd would
        # copy the [tokens, out] gradient three times in backward (CopySlices).
        rows = x.reshape(-1, x.shape[-1])
        if self._one_autograd_node(active, rows, args, kwargs):
            name = active[0]
            base, a, b = self.base_layer, self.lora_A[name].weight, self.lora_B[name].weight
            dropout = self.lora_dropout[name]
            dropped = None if isinstance(dropout, nn.Identity) or not dropout.training else dropout(rows)
            result = LoraLinearFunction.apply(rows, dropped, base.weight, base.bias, a, b, self.scaling[name])
            return result.reshape(*x.shape[:-1], result.shape[-1])
        result = self._base_output(rows, *args, **kwargs)
        for name in active:
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            if name in self.lora_magnitude_vector:
                result = (result + self._dora_output(name, rows.to(a.dtype), result)).to(result.dtype)
                continue
            hidden = F.linear(self.lora_dropout[name](rows.to(a.dtype)), a)
            scaling = self.scaling[name]
            if isinstance(scaling, torch.Tensor):  # kept as a tensor for hot-swapping (torch_hotswap)
                hidden, scaling = hidden * scaling, 1.0
            if result.dtype == b.dtype:
                result.addmm_(hidden, b.t(), alpha=scaling)
            else:
                result = (result + F.linear(hidden, b) * scaling).to(result.dtype)
        return result.reshape(*x.shape[:-1], result.shape[-1])

    def _one_autograd_node(self, active: list[str], rows: torch.Tensor, args: tuple, kwargs: dict) -> bool:
        """Whether a training forward can take :class:`LoraLinearFunction`: one plain adapter
        (no DoRA, a float scaling) on a plain ``nn.Linear`` with no hooks, all in one dtype, outside
        autocast and tensor parallelism."""
        if len(active) != 1 or args or kwargs or not torch.is_grad_enabled():
            return False
        name, base = active[0], self.base_layer
        if type(base) is not nn.Linear or base._forward_hooks or base._forward_pre_hooks or "forward" in vars(base):
            return False
        if name in self.lora_magnitude_vector or isinstance(self.scaling[name], torch.Tensor):
            return False
        if torch.is_autocast_enabled(rows.device.type):
            return False
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        return rows.dtype == base.weight.dtype == a.dtype == b.dtype and not is_dtensor(base.weight)

    def mixed_batch_forward(self, row_adapters: list[str], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """A batch of several plain LoRA adapters in two batched products, whatever their number::

            y_i = W x_i + b + s_i B_i A_i x_i      (row i, adapter i; B_i A_i = 0 on "__base__" rows)

        with each row's ``A_i`` ``[r, in]`` and ``s_i B_i`` ``[out, r]`` gathered once per batch
        (zero-padded to the largest rank; kept for the steps of a ``generate``). DoRA adapters,
        tensor-parallel layers and one-adapter batches take the per-adapter sub-batches."""
        groups = self._rows_by_adapter(row_adapters, x.shape[0])
        lora = [name for name in groups if name != "__base__"]
        if len(groups) == 1 or self._peftplug_adopted_hooks or any(n in self.lora_magnitude_vector for n in lora):
            return super().mixed_batch_forward(row_adapters, x, *args, **kwargs)
        a_rows, b_rows = self._row_weights(row_adapters, lora)
        result = self.base_layer(x, *args, **kwargs)
        tokens = x.reshape(x.shape[0], -1, x.shape[-1]).to(a_rows.dtype)
        delta = torch.bmm(torch.bmm(tokens, a_rows.transpose(1, 2)), b_rows.transpose(1, 2))
        return result + delta.reshape(result.shape).to(result.dtype)

    def _row_weights(self, row_adapters: list[str], lora: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's ``A`` ``[rows, r, in]`` and ``s B`` ``[rows, out, r]`` (zeros for the base),
        kept until the mixed batch ends when no gradient is recorded."""
        weights = [(self.lora_A[n].weight, self.lora_B[n].weight) for n in lora]
        key = (tuple(row_adapters), tuple((id(a), a._version, id(b), b._version) for a, b in weights))
        if self._row_weights_cache is not None and self._row_weights_cache[0] == key:
            return self._row_weights_cache[1]
        rank = max(a.shape[0] for a, _ in weights)
        a_stack = torch.stack(
            [F.pad(a, (0, 0, 0, rank - a.shape[0])) for a, _ in weights]
            + [weights[0][0].new_zeros(rank, self.in_features)]
        )
        b_stack = torch.stack(
            [F.pad(b * self.scaling[n], (0, rank - b.shape[1])) for n, (_, b) in zip(lora, weights)]
            + [weights[0][1].new_zeros(self.out_features, rank)]
        )
        slots = {name: slot for slot, name in enumerate(lora)}
        index = torch.tensor([slots.get(name, len(lora)) for name in row_adapters], device=a_stack.device)
        gathered = (a_stack[index], b_stack[index])
        if not torch.is_grad_enabled():
            self._row_weights_cache = (key, gathered)
        return gathered

    def end_mixed_batch(self) -> None:
        """Drop the weights gathered for the mixed batch that ended."""
        self._row_weights_cache = None

    def _base_output(self, rows: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The base layer's output for ``rows``, which the adapters then add to in place."""
        return self.base_layer(rows, *args, **kwargs)

    def _dora_output(self, name: str, rows: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """What DoRA adapter ``name`` adds to ``result``, the output so far (HF PEFT's order: with
        dropout off, ``W x`` is taken from ``result`` less the bias; with it on, recomputed)."""
        dropout = self.lora_dropout[name]
        base_result = None
        if isinstance(dropout, nn.Identity) or not self.training:
            bias = self.base_layer.bias
            base_result = result if bias is None else result - bias
        else:
            rows = dropout(rows)
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        magnitude = self.lora_magnitude_vector[name].weight
        return dora_output(rows, base_result, self._weight_out_in(), a, b, magnitude, self.scaling[name])

    def _forward_dtensor(self, x: torch.Tensor, active: list[str], *args, **kwargs) -> torch.Tensor:
        """The tensor-parallel forward, between the adopted input and output hooks: base output
        and each adapter's path as DTensors, the path brought to the base output's placement
        (``Shard(-1)`` column-parallel, ``Partial`` row-parallel) before they are added."""
        result = self.base_layer(x, *args, **kwargs)
        for name in active:
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            delta = F.linear(F.linear(self.lora_dropout[name](x.to(a.dtype)), a), b) * self.scaling[name]
            if delta.placements != result.placements:
                delta = delta.redistribute(result.device_mesh, result.placements)
            result = result + delta.to(result.dtype)
        return result


class LoraConv2d(_ModulePairLayer):
    """LoRA around ``nn.Conv2d`` (HF PEFT's): ``conv(x) + s * B(A(dropout(x)))``, where A is a
    convolution with the base's kernel, stride and padding from ``in`` to ``r`` channels
    (``lora_A.weight`` ``[r, in, kh, kw]``) and B a 1x1 convolution to ``out`` channels
    (``lora_B.weight`` ``[out, r, 1, 1]``). Merged, ``W += s * B o A``: A's kernel with its
    channels mixed through B."""

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name``; grouped or dilated convolutions and DoRA are refused."""
        base = self.base_layer
        refuse_base_weight_init(
            config.init_lora_weights, module_name, "a Conv2d; PiSSA and OLoRA initialise Linear layers only"
        )
        if base.groups != 1 or tuple(base.dilation) != (1, 1) or config.use_dora:
            found = "use_dora=True" if config.use_dora else f"groups={base.groups}, dilation={tuple(base.dilation)}"
            raise PeftplugError(
                f"LoRA on {module_name} (Conv2d, {found}): peftplug's Conv2d LoRA takes plain LoRA on ungrouped, "
                "undilated convolutions; leave this module out of target_modules"
            )
        r = self._record(adapter_name, config, module_name)
        factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight)}
        a = nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False, **factory)
        b = nn.Conv2d(r, base.out_channels, (1, 1), (1, 1), bias=False, **factory)
        self._add_pair(adapter_name, config, a, b)

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``s * B o A`` as a ``[out, in, kh, kw]`` kernel, in the base weight's dtype."""
        a = self.lora_A[adapter_name].weight
        b = self.lora_B[adapter_name].weight
        if a.dtype in LOW_PRECISION:
            a, b = a.float(), b.float()
        if a.shape[2:] == (1, 1):
            delta = (b[:, :, 0, 0] @ a[:, :, 0, 0])[:, :, None, None]
        else:
            delta = F.conv2d(a.transpose(0, 1), b).transpose(0, 1)
        return (delta * self.scaling[adapter_name]).to(self.base_layer.weight.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``conv(x) + s * B(A(dropout(x)))`` for each active, unmerged adapter."""
        result = self.base_layer(x, *args, **kwargs)
        for name in self._active_unmerged():
            a, b = self.lora_A[name], self.lora_B[name]
            path = b(a(self.lora_dropout[name](x.to(a.weight.dtype))))
            result = result + (path * self.scaling[name]).to(result.dtype)
        return result


class LoraEmbedding(LoraLayer):
    """LoRA around ``nn.Embedding``: ``E[x] + s * (A^T[x]) B^T``, A ``[r, vocab]`` zeros,
    B ``[dim, r]`` normal (HF PEFT's and loralib's initialisation)."""

    adapter_layer_names = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Embedding):
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def update_layer(self, adapter_name: str, config: LoraConfig, module_name: str) -> None:
        """Add adapter ``adapter_name``; LoRA dropout does not apply to token ids."""
        if config.use_dora:
            raise PeftplugError(
                f"DoRA (use_dora=True) on {module_name}: peftplug's DoRA wraps nn.Linear and Conv1D layers, not "
                f"{type(self.base_layer).__name__}; leave this module out of target_modules"
            )
        r = self._record(adapter_name, config, module_name)
        weight = self.base_layer.weight
        factory = {"device": weight.device, "dtype": adapter_dtype(weight)}
        a = torch.empty(r, self.base_layer.num_embeddings, **factory)
        b = torch.empty(self.base_layer.embedding_dim, r, **factory)
        if config.init_lora_weights is not False and weight.device.type != "meta":
            nn.init.zeros_(a)
            nn.init.normal_(b)
        elif weight.device.type != "meta":
            nn.init.normal_(a)
            nn.init.normal_(b)
        self.lora_embedding_A[adapter_name] = nn.Parameter(a)
        self.lora_embedding_B[adapter_name] = nn.Parameter(b)

    def delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``s * (B A)^T``, ``[vocab, dim]`` like the embedding table."""
        a, b = self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]
        return ((b @ a).T * self.scaling[adapter_name]).to(self.base_layer.weight.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``E[x] + s * A^T[x] B^T`` for each active, unmerged adapter."""
        result = self.base_layer(x, *args, **kwargs)
        base = self.base_layer
        for name in self._active_unmerged():
            after_a = F.embedding(
                x,
                self.lora_embedding_A[name].T,
                base.padding_idx,
                base.max_norm,
                base.norm_type,
                base.scale_grad_by_freq,
                base.sparse,
            )
            result = result + ((after_a @ self.lora_embedding_B[name].T) * self.scaling[name]).to(result.dtype)
        return result

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """``lora_embedding_A`` ``[r, vocab]`` and ``lora_embedding_B`` ``[dim, r]``."""
        return {
            "lora_embedding_A": to_numpy(self.lora_embedding_A[name]),
            "lora_embedding_B": to_numpy(self.lora_embedding_B[name]),
        }

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy ``lora_embedding_A`` / ``lora_embedding_B`` in, checking shapes."""
        holders = {"lora_embedding_A": self.lora_embedding_A[name], "lora_embedding_B": self.lora_embedding_B[name]}
        taken = set(holders) & set(tensors)
        for suffix in sorted(taken):
            copy_into(holders[suffix], tensors[suffix], key_prefix + suffix)
        return taken


def wrap(layer: nn.Module, name: str, config: LoraConfig, adapter_name: str) -> nn.Module | None:
    """The LoRA layer for ``layer`` with adapter ``adapter_name`` added; None if unsupported."""
    if isinstance(layer, LoraLayer):
        lora = layer
    elif isinstance(layer, nn.Linear):
        lora = LoraLinear(layer, fan_in_fan_out=False)
    elif is_conv1d(layer):
        config.fan_in_fan_out = True  # Conv1D stores [in, out]; HF PEFT records the same
        lora = LoraLinear(layer, fan_in_fan_out=True)
    elif isinstance(layer, nn.Embedding):
        lora = LoraEmbedding(layer)
    elif isinstance(layer, nn.Conv2d):
        lora = LoraConv2d(layer)
    else:
        return None
    lora.update_layer(adapter_name, config, name)
    return lora


def svd(matrix: np.ndarray, full_matrices: bool, driver: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U, S, Vh`` of ``matrix`` by ``torch.linalg.svd`` (HF PEFT's, signs included)."""
    u, singular, vh = torch.linalg.svd(torch.from_numpy(matrix), full_matrices=full_matrices, driver=driver)
    return u.numpy(), singular.numpy(), vh.numpy()
