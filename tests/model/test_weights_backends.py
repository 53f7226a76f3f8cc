"""copy_base_weights reads and writes tensors through each model's backend: a torch model whose
weights are DTensors (tensor parallelism, one rank here) is gathered whole to read, and keeps
its piece when written, as adapter tensors are."""

from __future__ import annotations

import numpy as np
import pytest

from peftplug.interop.weights import copy_base_weights

LLAMA = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


@pytest.fixture
def mesh(torch):
    """A one-rank gloo process group and device mesh, taken down after the test."""
    from torch import distributed
    from torch.distributed.device_mesh import init_device_mesh

    distributed.init_process_group("gloo", rank=0, world_size=1, store=distributed.HashStore())
    yield init_device_mesh("cpu", (1,))
    distributed.destroy_process_group()


def hf_llama(torch, mesh=None):
    """The tiny transformers Llama (seed 0), its linear weights DTensors on ``mesh`` when given."""
    import transformers
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    if mesh is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight = torch.nn.Parameter(distribute_tensor(module.weight.data, mesh, [Shard(0)]))
    return model


def paddle_llama(paddle, seed: int):
    import paddlenlp.transformers as pt

    paddle.seed(seed)
    return pt.LlamaForCausalLM(pt.LlamaConfig(**LLAMA))


def test_a_dtensor_source_is_gathered(torch, paddle, mesh):
    sharded, plain = paddle_llama(paddle, 1), paddle_llama(paddle, 1)
    copy_base_weights(hf_llama(torch, mesh), sharded)
    copy_base_weights(hf_llama(torch), plain)
    for name, tensor in plain.state_dict().items():
        np.testing.assert_array_equal(sharded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)


def test_a_dtensor_target_keeps_its_piece(torch, paddle, mesh):
    from torch.distributed.tensor import DTensor

    source = paddle_llama(paddle, 2)
    sharded, plain = hf_llama(torch, mesh), hf_llama(torch)
    copy_base_weights(source, sharded)
    copy_base_weights(source, plain)
    written = sharded.state_dict()
    assert isinstance(written["model.layers.0.self_attn.q_proj.weight"], DTensor)
    for name, tensor in plain.state_dict().items():
        got = written[name].full_tensor() if isinstance(written[name], DTensor) else written[name]
        torch.testing.assert_close(got, tensor, rtol=0, atol=0, msg=name)
