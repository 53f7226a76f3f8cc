"""Split axes of tensor-parallel shards without an index, read from the method's declared roles
(no LoRA names): IA3's vectors and a third-party method's shard like LoRA's matrices do."""

from __future__ import annotations

import numpy as np
import peftplug_ssf
import pytest

import peftplug
from peftplug.distributed.tp_shards import TensorParallelError, infer_split_axes
from peftplug.tensor_roles import roles_by_suffix

LAYER = "base_model.model.model.layers.0."


def _roles(method: str):
    return roles_by_suffix(peftplug.get_plugin_manager().methods.get(method).tensors)


def _pieces(shapes: dict[str, tuple[int, ...]], same: set[str] = frozenset()) -> dict[str, list[np.ndarray]]:
    """Two ranks' pieces of each tensor: different random values, equal for the keys in ``same``."""
    generator = np.random.default_rng(0)
    return {
        key: [np.ones(shape, "f4")] * 2
        if key in same
        else [generator.standard_normal(shape).astype("f4") for _ in range(2)]
        for key, shape in shapes.items()
    }


def test_ia3_vectors_split_on_the_parallel_axis():
    pieces = _pieces(
        {
            LAYER + "self_attn.q_proj.ia3_l": (16, 1),  # column-parallel output
            LAYER + "mlp.down_proj.ia3_l": (1, 32),  # row-parallel feed-forward input
            LAYER + "self_attn.o_proj.ia3_l": (32, 1),  # row-parallel output: whole
        },
        same={LAYER + "self_attn.o_proj.ia3_l"},
    )
    axes = infer_split_axes(pieces, _roles("ia3"))
    assert axes == {
        LAYER + "self_attn.q_proj.ia3_l": 0,
        LAYER + "mlp.down_proj.ia3_l": 1,
        LAYER + "self_attn.o_proj.ia3_l": None,
    }


def test_lora_pairs_still_split_as_before():
    pieces = _pieces(
        {
            LAYER + "self_attn.q_proj.lora_A.weight": (4, 32),
            LAYER + "self_attn.q_proj.lora_B.weight": (16, 4),
            LAYER + "self_attn.o_proj.lora_A.weight": (4, 16),
            LAYER + "self_attn.o_proj.lora_B.weight": (32, 4),
            LAYER + "mlp.down_proj.lora_A.weight": (4, 32),
            LAYER + "mlp.down_proj.lora_B.weight": (32, 4),
        },
        same={LAYER + "self_attn.q_proj.lora_A.weight", LAYER + "self_attn.o_proj.lora_B.weight"}
        | {LAYER + "mlp.down_proj.lora_A.weight", LAYER + "mlp.down_proj.lora_B.weight"},
    )
    axes = infer_split_axes(pieces, _roles("lora"))
    assert [axes[k] for k in pieces] == [None, 0, 1, None, 1, None]


def test_a_declared_third_party_method_shards_and_an_undeclared_tensor_is_named():
    roles = roles_by_suffix(peftplug_ssf.peftplug_register_methods().tensors)
    pieces = _pieces({LAYER + "self_attn.q_proj.ssf_scale": (16,), LAYER + "self_attn.q_proj.ssf_shift": (16,)})
    assert set(infer_split_axes(pieces, roles).values()) == {0}
    with pytest.raises(TensorParallelError, match=r"self_attn\.q_proj\.ssf_scale' differs between ranks"):
        infer_split_axes(pieces, {})
