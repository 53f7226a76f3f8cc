"""IA3 on PaddlePaddle. PaddleNLP has no IA3: the reference is HF PEFT on the same Llama in
PyTorch (same weights, same vectors, same logits), plus the math on a single Linear."""

from __future__ import annotations

import numpy as np
import pytest
from paddle_lm import ids_batch, logits, train

import peftplug
from peftplug.errors import AdapterShapeError


def ia3(make_paddle_model, **fields):
    return peftplug.get_peft_model(make_paddle_model("llama"), peftplug.IA3Config(task_type="CAUSAL_LM", **fields))


def randomise_ia3(paddle, model, seed: int = 5) -> None:
    """Vectors away from one, so that every scaling shows."""
    rng = np.random.default_rng(seed)
    for name, parameter in model.named_parameters():
        if ".ia3_l." in name:
            parameter.set_value(rng.uniform(0.5, 1.5, size=parameter.shape).astype("float32"))


def test_defaults_follow_the_llama_family_and_export_hf_shapes(paddle, make_paddle_model):
    model = ia3(make_paddle_model)
    assert model.peft_config["default"].target_modules == ["k_proj", "v_proj", "down_proj"]
    tensors = model.adapter_state().tensors
    prefix = "base_model.model.llama.layers.0"
    assert tensors[f"{prefix}.mlp.down_proj.ia3_l"].shape == (1, 64)  # feed-forward: [1, in]
    assert tensors[f"{prefix}.self_attn.k_proj.ia3_l"].shape == (16, 1)  # other: [out, 1]
    assert len(tensors) == 6
    # 2 layers x (k 16 + v 16 + down 64)
    assert model.get_nb_trainable_parameters()[0] == 2 * (16 + 16 + 64)


def test_a_fresh_adapter_changes_nothing(paddle, make_paddle_model):
    ids = ids_batch(paddle)
    assert np.array_equal(logits(paddle, ia3(make_paddle_model), ids), logits(paddle, make_paddle_model("llama"), ids))


def test_forward_scales_inputs_of_feedforward_modules_and_outputs_of_others(paddle):
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 5), paddle.nn.Linear(5, 3))
    w0, b0 = net[0].weight.numpy(), net[0].bias.numpy()
    w1, b1 = net[1].weight.numpy(), net[1].bias.numpy()
    model = peftplug.get_peft_model(net, peftplug.IA3Config(target_modules=["0", "1"], feedforward_modules=["1"]))
    randomise_ia3(paddle, model)
    out_scale = model.base_model.model[0].ia3_l["default"].numpy()  # [1, 5]
    in_scale = model.base_model.model[1].ia3_l["default"].numpy()  # [1, 5]
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    hidden = (x @ w0 + b0) * out_scale
    expected = (hidden * in_scale) @ w1 + b1
    with paddle.no_grad():
        np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def paddle_to_hf_llama(paddle_model):
    """The HF Llama with the same weights as a tiny PaddleNLP Llama (Linear weights and the
    head transposed, ``llama.`` renamed ``model.``)."""
    import torch
    import transformers

    config = paddle_model.config
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            rms_norm_eps=config.rms_norm_eps,
            tie_word_embeddings=False,
        )
    )
    weights = {}
    for name, parameter in paddle_model.named_parameters():
        array = parameter.numpy()
        if array.ndim == 2 and "embed_tokens" not in name:
            array = array.T
        weights[name.replace("llama.", "model.", 1)] = torch.from_numpy(np.ascontiguousarray(array))
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    assert not unexpected and all("rotary" in key for key in missing), (missing, unexpected)
    return hf.eval()


def test_same_vectors_give_hf_peft_logits_on_the_same_llama(paddle, make_paddle_model):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    ids = ids_batch(paddle)
    hf = paddle_to_hf_llama(make_paddle_model("llama"))
    torch_ids = torch.from_numpy(ids.numpy())
    with torch.no_grad():
        base_gap = np.abs(hf(input_ids=torch_ids).logits.numpy() - logits(paddle, make_paddle_model("llama"), ids))
    assert base_gap.max() <= 1e-5, "the two frameworks' Llamas differ before any adapter"

    model = ia3(make_paddle_model, target_modules=["k_proj", "v_proj", "down_proj", "up_proj"])
    randomise_ia3(paddle, model)
    theirs = peft.get_peft_model(
        hf,
        peft.IA3Config(
            task_type="CAUSAL_LM",
            target_modules=["k_proj", "v_proj", "down_proj", "up_proj"],
            feedforward_modules=["down_proj"],
        ),
    )
    state = {
        key.replace("base_model.model.llama.", "base_model.model.model."): torch.from_numpy(array)
        for key, array in model.adapter_state().tensors.items()
    }
    result = peft.set_peft_model_state_dict(theirs, state)
    assert not result.unexpected_keys
    with torch.no_grad():
        expected = theirs(input_ids=torch_ids).logits.numpy()
    ours = logits(paddle, model, ids)
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.abs(ours - logits(paddle, make_paddle_model("llama"), ids)).max() > 1e-3, "IA3 had no effect"


def test_plain_loop_trains_only_the_vectors(paddle, make_paddle_model):
    model = ia3(make_paddle_model)
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    losses = train(paddle, model, ids_batch(paddle), steps=5, lr=5e-2)
    assert losses[-1] < losses[0]
    changed = {name for name, p in model.named_parameters() if not np.array_equal(p.numpy(), before[name])}
    assert changed and all(".ia3_l." in name for name in changed)


def test_merge_and_unload_equals_unmerged(paddle, make_paddle_model):
    model = ia3(
        make_paddle_model,
        target_modules=["q_proj", "k_proj", "up_proj", "down_proj"],
        feedforward_modules=["up_proj", "down_proj"],
    )
    randomise_ia3(paddle, model)
    ids = ids_batch(paddle)
    expected = logits(paddle, model, ids)
    model.merge_adapter()
    assert np.abs(logits(paddle, model, ids) - expected).max() <= 1e-5
    merged = model.merge_and_unload()
    assert type(merged.llama.layers[0].mlp.up_proj) is paddle.nn.Linear
    assert not any("ia3" in name for name, _ in merged.named_parameters())
    assert np.abs(logits(paddle, merged, ids) - expected).max() <= 1e-5


def test_unmerge_warns_and_restores_the_weights(paddle):
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 5), paddle.nn.Linear(5, 3))
    weights = [p.numpy().copy() for p in net.parameters()]
    model = peftplug.get_peft_model(net, peftplug.IA3Config(target_modules=["0", "1"], feedforward_modules=["1"]))
    randomise_ia3(paddle, model)
    model.merge_adapter()
    assert not np.allclose(model.base_model.model[0].base_layer.weight.numpy(), weights[0])
    with pytest.warns(UserWarning, match="inexact"):
        model.unmerge_adapter()
    for restored, original in zip([p for n, p in model.named_parameters() if "ia3" not in n], weights):
        np.testing.assert_allclose(restored.numpy(), original, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_and_several_adapters(paddle, make_paddle_model, tmp_path):
    model = ia3(make_paddle_model)
    model.add_adapter(
        "other", peftplug.IA3Config(target_modules=["q_proj", "up_proj"], feedforward_modules=["up_proj"])
    )
    randomise_ia3(paddle, model)
    ids = ids_batch(paddle)
    first = logits(paddle, model, ids)
    model.set_adapter("other")
    second = logits(paddle, model, ids)
    assert np.abs(first - second).max() > 1e-4
    with model.disable_adapter():
        assert np.array_equal(logits(paddle, model, ids), logits(paddle, make_paddle_model("llama"), ids))
    model.save_pretrained(tmp_path)
    loaded = peftplug.PeftModel.from_pretrained(make_paddle_model("llama"), tmp_path)
    assert np.abs(logits(paddle, loaded, ids) - first).max() <= 1e-6
    loaded.load_adapter(tmp_path / "other", "other")
    loaded.set_adapter("other")
    assert np.abs(logits(paddle, loaded, ids) - second).max() <= 1e-6
    loaded.delete_adapter("other")
    assert np.abs(logits(paddle, loaded, ids) - first).max() <= 1e-6


def test_a_misshapen_vector_on_load_names_key_and_both_shapes(paddle, make_paddle_model, tmp_path):
    model = ia3(make_paddle_model)
    state = model.adapter_state()
    key = "base_model.model.llama.layers.1.self_attn.v_proj.ia3_l"
    state.tensors[key] = np.ones((1, 16), dtype="float32")  # a feed-forward shape for an output vector
    with pytest.raises(AdapterShapeError) as error:
        ia3(make_paddle_model).load_adapter_state(state, "default")
    assert key in str(error.value) and "[1, 16]" in str(error.value) and "[16, 1]" in str(error.value)
