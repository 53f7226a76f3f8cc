"""LoRA on PaddlePaddle against the real PaddleNLP: counts, logits, training, files, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest
from paddle_lm import ids_batch, lm_loss, logits, token_rows, train

import peftplug
from peftplug.errors import AdapterShapeError, TargetModulesError
from peftplug.interop.cross_framework import state_for_model


@pytest.fixture(scope="module")
def paddlenlp_peft(paddle):
    return pytest.importorskip("paddlenlp.peft")


def randomise_lora(paddle, model, seed: int = 3) -> None:
    """Give every LoRA matrix (ours or PaddleNLP's) non-zero random values."""
    rng = np.random.default_rng(seed)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.set_value(rng.normal(0, 0.2, size=parameter.shape).astype("float32"))


def ours(make_paddle_model, **fields):
    fields.setdefault("r", 4)
    fields.setdefault("lora_alpha", 8)
    return peftplug.get_peft_model(make_paddle_model("llama"), peftplug.LoraConfig(task_type="CAUSAL_LM", **fields))


# ------------------------------------------------------------------ against PaddleNLP's LoRAModel
@pytest.mark.parametrize(
    "targets, regexes",
    [
        (["q_proj", "v_proj"], [".*q_proj", ".*v_proj"]),
        ("all-linear", [".*_proj"]),
    ],
    ids=["q-v", "all-linear"],
)
def test_parameter_counts_equal_paddlenlp(paddle, paddlenlp_peft, make_paddle_model, targets, regexes):
    model = ours(make_paddle_model, target_modules=targets)
    theirs = paddlenlp_peft.LoRAModel(
        make_paddle_model("llama"), paddlenlp_peft.LoRAConfig(target_modules=regexes, r=4, lora_alpha=8)
    )
    their_trainable = sum(int(np.prod(p.shape)) for p in theirs.parameters() if not p.stop_gradient)
    their_total = sum(int(np.prod(p.shape)) for p in theirs.parameters())
    assert model.get_nb_trainable_parameters() == (their_trainable, their_total)
    assert their_trainable > 0


def copy_paddlenlp_lora_into(theirs, model) -> None:
    """PaddleNLP's A ``[in, r]`` / B ``[r, out]`` into ours, through the HF PEFT layout (the
    conversion a format makes: transpose, add ``.weight``, prefix)."""
    tensors = {}
    for name, parameter in theirs.model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            tensors[f"base_model.model.{name}.weight"] = parameter.numpy().T
    state = peftplug.state.AdapterState(model.peft_config["default"], tensors)
    model.load_adapter_state(state, "default")


@pytest.mark.parametrize("rslora", [False, True])
def test_same_weights_give_paddlenlp_logits_and_gradients(paddle, paddlenlp_peft, make_paddle_model, rslora):
    theirs = paddlenlp_peft.LoRAModel(
        make_paddle_model("llama"),
        paddlenlp_peft.LoRAConfig(target_modules=[".*_proj"], r=4, lora_alpha=16, rslora=rslora),
    )
    randomise_lora(paddle, theirs)
    model = ours(make_paddle_model, target_modules="all-linear", lora_alpha=16, use_rslora=rslora)
    copy_paddlenlp_lora_into(theirs, model)
    ids = ids_batch(paddle)
    theirs.train()  # PaddleNLP merges its weights in eval(); train mode runs its LoRA forward
    model.train()
    expected = logits(paddle, theirs, ids)
    assert np.abs(logits(paddle, model, ids) - expected).max() <= 1e-5
    assert np.abs(expected - logits(paddle, make_paddle_model("llama"), ids)).max() > 1e-3, "LoRA had no effect"

    lm_loss(paddle, theirs, ids).backward()
    lm_loss(paddle, model, ids).backward()
    their_grad = theirs.model.llama.layers[1].self_attn.q_proj.lora_A.grad.numpy()
    our_grad = model.base_model.model.llama.layers[1].self_attn.q_proj.lora_A["default"].grad.numpy()
    np.testing.assert_allclose(our_grad, their_grad, atol=1e-6)


def test_adapter_trained_by_paddlenlp_loads_with_same_logits(paddle, paddlenlp_peft, make_paddle_model):
    theirs = paddlenlp_peft.LoRAModel(
        make_paddle_model("llama"),
        paddlenlp_peft.LoRAConfig(target_modules=[".*q_proj", ".*v_proj"], r=4, lora_alpha=4),
    )
    ids = ids_batch(paddle)
    train(paddle, theirs, ids, steps=3)
    theirs.train()
    model = ours(make_paddle_model, target_modules=["q_proj", "v_proj"], lora_alpha=4)
    copy_paddlenlp_lora_into(theirs, model)
    assert np.abs(logits(paddle, model, ids) - logits(paddle, theirs, ids)).max() <= 1e-5


# ------------------------------------------------------------------ training
def test_plain_loop_trains_only_the_adapter(paddle, make_paddle_model):
    model = ours(make_paddle_model, target_modules=["q_proj", "v_proj", "down_proj"])
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    losses = train(paddle, model, ids_batch(paddle), steps=5, lr=5e-2)
    assert losses[-1] < losses[0]
    changed = {name for name, p in model.named_parameters() if not np.array_equal(p.numpy(), before[name])}
    assert changed and all(".lora_" in name for name in changed)
    assert {n for n in before if ".lora_B." in n} <= changed


def test_paddlenlp_trainer_trains_and_its_checkpoint_loads(paddle, make_paddle_model, tmp_path):
    from paddlenlp.trainer import Trainer, TrainingArguments

    from peftplug.backends.paddle.trainer import AdapterCheckpointCallback

    model = ours(make_paddle_model, target_modules=["q_proj", "v_proj"])
    frozen = model.base_model.model.llama.layers[0].self_attn.q_proj.base_layer.weight.numpy().copy()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        save_steps=3,
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
        report_to=[],
        device="cpu",
    )
    trainer = Trainer(model=model, args=args, train_dataset=token_rows(paddle), callbacks=[AdapterCheckpointCallback()])
    result = trainer.train()
    assert result.global_step == 3
    checkpoint = tmp_path / "checkpoint-3"
    assert (checkpoint / "adapter_config.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    q_proj = model.base_model.model.llama.layers[0].self_attn.q_proj
    assert np.array_equal(q_proj.base_layer.weight.numpy(), frozen)
    assert np.abs(q_proj.lora_B["default"].numpy()).max() > 0, "Trainer did not train the adapter"
    loaded = peftplug.PeftModel.from_pretrained(make_paddle_model("llama"), checkpoint)
    ids = ids_batch(paddle)
    model.eval()
    assert np.abs(logits(paddle, loaded, ids) - logits(paddle, model, ids)).max() <= 1e-5


# ------------------------------------------------------------------ files
def test_save_and_load_round_trip_in_hf_peft_layout(paddle, make_paddle_model, tmp_path):
    from safetensors.numpy import load_file

    model = ours(make_paddle_model, target_modules=["q_proj", "k_proj", "down_proj"], r=2)
    ids = ids_batch(paddle)
    train(paddle, model, ids, steps=2)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.k_proj"  # HF's module tree, for HF PEFT
    assert tensors[f"{key}.lora_A.weight"].shape == (2, 32)  # [r, in]
    assert tensors[f"{key}.lora_B.weight"].shape == (16, 2)  # [out, r]: k_proj maps 32 -> 16 (GQA)
    assert tensors[f"{key}.lora_A.weight"].dtype == np.float32
    loaded = peftplug.PeftModel.from_pretrained(make_paddle_model("llama"), tmp_path)
    assert loaded.get_nb_trainable_parameters()[0] == 0, "loaded for inference: nothing trainable"
    assert np.abs(logits(paddle, loaded, ids) - logits(paddle, model, ids)).max() <= 1e-5
    trainable = peftplug.PeftModel.from_pretrained(make_paddle_model("llama"), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters() == model.get_nb_trainable_parameters()


def test_shape_mismatch_on_load_names_key_and_both_shapes(paddle, make_paddle_model, tmp_path):
    ours(make_paddle_model, target_modules=["q_proj"], r=2).save_pretrained(tmp_path)
    model = ours(make_paddle_model, target_modules=["q_proj"], r=4)
    state = state_for_model(peftplug.adapter_io.read_adapter(tmp_path, None), model.base_model.model, "peft")
    with pytest.raises(AdapterShapeError) as error:
        model.load_adapter_state(state, "default")
    message = str(error.value)
    assert "base_model.model.llama.layers.0.self_attn.q_proj.lora_A.weight" in message
    assert "[2, 32]" in message and "[4, 32]" in message


def test_pattern_matching_nothing_is_a_clear_error(paddle, make_paddle_model):
    with pytest.raises(TargetModulesError, match=r"q_prj.*q_proj"):
        ours(make_paddle_model, target_modules=["q_prj"])


# ------------------------------------------------------------------ merging and adapters
def test_merge_and_unload_equals_unmerged(paddle, make_paddle_model):
    model = ours(make_paddle_model, target_modules="all-linear")
    randomise_lora(paddle, model)
    ids = ids_batch(paddle)
    expected = logits(paddle, model, ids)
    base_weight = make_paddle_model("llama").llama.layers[0].mlp.up_proj.weight.numpy()
    model.merge_adapter()
    assert np.abs(logits(paddle, model, ids) - expected).max() <= 1e-5
    model.unmerge_adapter()
    np.testing.assert_allclose(
        model.base_model.model.llama.layers[0].mlp.up_proj.base_layer.weight.numpy(), base_weight, atol=1e-6
    )
    merged = model.merge_and_unload()
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert type(merged.llama.layers[0].mlp.up_proj) is paddle.nn.Linear
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert np.abs(logits(paddle, merged, ids) - expected).max() <= 1e-5


def test_unload_restores_the_base_model(paddle, make_paddle_model):
    model = ours(make_paddle_model, target_modules=["q_proj"])
    randomise_lora(paddle, model)
    ids = ids_batch(paddle)
    plain = model.unload()
    assert np.array_equal(logits(paddle, plain, ids), logits(paddle, make_paddle_model("llama"), ids))


def test_several_adapters_set_disable_delete(paddle, make_paddle_model, tmp_path):
    model = ours(make_paddle_model, target_modules=["q_proj", "v_proj"])
    model.add_adapter("other", peftplug.LoraConfig(r=2, target_modules=["v_proj"]))
    randomise_lora(paddle, model)
    ids = ids_batch(paddle)
    base = logits(paddle, make_paddle_model("llama"), ids)
    first = logits(paddle, model, ids)
    trainable = {n for n, p in model.named_parameters() if not p.stop_gradient}
    assert trainable and all(n.endswith(".default") for n in trainable)

    model.set_adapter("other")
    second = logits(paddle, model, ids)
    trainable = {n for n, p in model.named_parameters() if not p.stop_gradient}
    assert trainable and all(n.endswith(".other") and ".v_proj." in n for n in trainable)
    assert np.abs(second - first).max() > 1e-4

    with model.disable_adapter():
        assert np.array_equal(logits(paddle, model, ids), base)
    assert np.array_equal(logits(paddle, model, ids), second)

    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "other" / "adapter_config.json").is_file()
    reloaded = peftplug.PeftModel.from_pretrained(make_paddle_model("llama"), tmp_path)
    reloaded.load_adapter(tmp_path / "other", "other")
    reloaded.set_adapter("other")
    assert np.abs(logits(paddle, reloaded, ids) - second).max() <= 1e-5

    model.delete_adapter("other")
    assert model.active_adapter == "default"
    assert not any(".other" in n for n, _ in model.named_parameters())
    assert np.abs(logits(paddle, model, ids) - first).max() <= 1e-6


def test_print_trainable_parameters(paddle, make_paddle_model, capsys):
    model = ours(make_paddle_model, target_modules=["q_proj", "v_proj"])
    model.print_trainable_parameters()
    line = capsys.readouterr().out.strip()
    # q_proj 32->32 and v_proj 32->16, r=4, two layers: 2 * (4*(32+32) + 4*(32+16)) = 896
    total = sum(int(np.prod(p.shape)) for p in make_paddle_model("llama").parameters()) + 896
    assert line == f"trainable params: 896 || all params: {total:,d} || trainable%: {100 * 896 / total:.4f}"


# ------------------------------------------------------------------ options on a plain Paddle network
def plain_network(paddle):
    paddle.seed(0)
    return paddle.nn.Sequential(
        paddle.nn.Linear(6, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 3)
    )


def test_rank_alpha_pattern_rslora_and_bias(paddle):
    config = peftplug.LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=["0", "2", "4"],
        rank_pattern={"2": 6},
        alpha_pattern={"4": 9},
        use_rslora=True,
        bias="lora_only",
    )
    model = peftplug.get_peft_model(plain_network(paddle), config)
    layers = model.base_model.model
    assert layers[2].lora_A["default"].shape == [8, 6] and layers[2].lora_B["default"].shape == [6, 8]
    assert layers[0].scaling["default"] == pytest.approx(4 / 2**0.5)
    assert layers[4].scaling["default"] == pytest.approx(9 / 2**0.5)
    trainable = sorted(n for n, p in model.named_parameters() if not p.stop_gradient)
    assert "base_model.model.0.base_layer.bias" in trainable
    assert not any(n.endswith("base_layer.weight") for n in trainable)


def test_dropout_applies_in_training_only(paddle):
    model = peftplug.get_peft_model(
        plain_network(paddle), peftplug.LoraConfig(r=2, lora_dropout=0.5, target_modules=["0"])
    )
    randomise_lora(paddle, model)
    x = paddle.randn([16, 6])
    model.eval()
    with paddle.no_grad():
        assert np.array_equal(model(x).numpy(), model(x).numpy())
        model.train()
        assert not np.array_equal(model(x).numpy(), model(x).numpy())


def test_kaiming_init_and_zero_b_as_hf_peft(paddle):
    model = peftplug.get_peft_model(plain_network(paddle), peftplug.LoraConfig(r=4, target_modules=["2"]))
    layer = model.base_model.model[2]
    a = layer.lora_A["default"].numpy()
    assert np.all(layer.lora_B["default"].numpy() == 0)
    bound = 1 / np.sqrt(8)  # kaiming-uniform, a=sqrt(5), fan_in = in = 8
    assert np.abs(a).max() <= bound and np.abs(a).max() > bound / 2


def test_modules_to_save_round_trip(paddle, tmp_path):
    config = peftplug.LoraConfig(r=2, target_modules=["0"], modules_to_save=["4"])
    model = peftplug.get_peft_model(plain_network(paddle), config)
    randomise_lora(paddle, model)
    trainable = {n for n, p in model.named_parameters() if not p.stop_gradient}
    assert "base_model.model.4.modules_to_save.default.weight" in trainable
    assert "base_model.model.4.original_module.weight" not in trainable
    x = paddle.randn([4, 6])
    copy_weight = model.base_model.model[4].modules_to_save["default"].weight
    copy_weight.set_value(copy_weight.numpy() + 0.5)
    model.save_pretrained(tmp_path)
    loaded = peftplug.PeftModel.from_pretrained(plain_network(paddle), tmp_path)
    with paddle.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_half_precision_base_keeps_float32_adapters_and_exports_float32(paddle, tmp_path):
    # Paddle has no bfloat16 matmul on CPU: this checks dtypes and files, not a forward.
    net = plain_network(paddle)
    net.to(dtype="bfloat16")
    config = peftplug.LoraConfig(r=2, target_modules=["0", "2"], modules_to_save=["4"])
    model = peftplug.get_peft_model(net, config)
    assert model.base_model.model[0].lora_A["default"].dtype == paddle.float32
    assert model.base_model.model[4].modules_to_save["default"].weight.dtype == paddle.bfloat16
    randomise_lora(paddle, model)
    state = model.adapter_state()
    assert all(array.dtype == np.float32 for array in state.tensors.values())
    assert "base_model.model.4.weight" in state.tensors and "base_model.model.0.lora_A.weight" in state.tensors
    model.save_pretrained(tmp_path)
    other = plain_network(paddle)
    other.to(dtype="bfloat16")
    loaded = peftplug.PeftModel.from_pretrained(other, tmp_path)
    for key, array in loaded.adapter_state().tensors.items():
        np.testing.assert_array_equal(array, state.tensors[key], err_msg=key)


def test_generate_runs_through_the_wrapper_with_the_adapter_applied(paddle, make_paddle_model):
    model = ours(make_paddle_model, target_modules="all-linear")
    randomise_lora(paddle, model)
    ids = ids_batch(paddle, batch=1, length=4)
    # PaddleNLP's Llama generate needs an explicit mask (it builds a float one that fails otherwise)
    options = {"attention_mask": paddle.ones_like(ids), "max_new_tokens": 4, "decode_strategy": "greedy_search"}
    generated, _ = model.generate(input_ids=ids, **options)
    with model.disable_adapter():
        plain, _ = model.generate(input_ids=ids, **options)
    assert generated.shape == [1, 4]
    merged, _ = model.merge_and_unload().generate(input_ids=ids, **options)
    assert np.array_equal(generated.numpy(), merged.numpy())
    assert not np.array_equal(generated.numpy(), plain.numpy()), "the adapter changed no token"
