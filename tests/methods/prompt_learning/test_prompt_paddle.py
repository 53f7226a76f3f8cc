"""Prompt tuning, P-tuning and prefix tuning on Paddle, on tiny PaddleNLP Llama (GQA) and Bloom
models: counts against PaddleNLP's PrefixModelForCausalLM and the PyTorch implementation, prefix
logits and generation against PaddleNLP's own prefix model, virtual-token forward against the
base model run by hand, training, exact resume, files, generation and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from paddle_lm import token_rows

import peftplug
from peftplug.errors import ConfigError, PeftplugError

pytest.importorskip("paddle")
pytest.importorskip("paddlenlp")

TOKENS = 4
FAMILIES = ["llama", "bloom"]
METHODS = {
    "prompt": ("PromptTuningConfig", {}),
    "ptuning-mlp": ("PromptEncoderConfig", {"encoder_hidden_size": 24}),
    "ptuning-lstm": ("PromptEncoderConfig", {"encoder_reparameterization_type": "LSTM", "encoder_hidden_size": 12}),
    "prefix": ("PrefixTuningConfig", {}),
    "prefix-projection": ("PrefixTuningConfig", {"prefix_projection": True, "encoder_hidden_size": 20}),
}
EMBEDDING_METHODS = ["prompt", "ptuning-mlp", "ptuning-lstm"]
PREFIX_METHODS = ["prefix", "prefix-projection"]
REPARAMETERISED = ["ptuning-mlp", "ptuning-lstm", "prefix-projection"]


def config(method, library=peftplug, **extra):
    """The ``method`` config (CAUSAL_LM, 4 virtual tokens) of ``library`` (peftplug or peft)."""
    class_name, fields = METHODS[method]
    return getattr(library, class_name)(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, **fields, **extra)


@pytest.fixture
def base_model(paddle, make_paddle_model):
    """``base_model(family)``: the tiny PaddleNLP model, every weight random (seeded).

    PaddleNLP 2.8.1's Bloom ``_init_weights`` zeroes every Linear weight (it sets the weight
    where it means the bias), which makes attention, and so any prefix, invisible: re-draw them.
    """

    def make(family):
        model = make_paddle_model(family)
        if family == "bloom":
            rng = np.random.default_rng(0)
            for name, parameter in model.named_parameters():
                if "layernorm" not in name:
                    values = rng.normal(0.0, 0.2, parameter.shape).astype("float32")
                    parameter.set_value(paddle.to_tensor(values))
        return model

    return make


def wrap(base_model, family, method, **extra):
    return peftplug.get_peft_model(base_model(family), config(method, **extra))


def ids_and_mask(paddle):
    """A left-padded batch: the second row starts with two pad tokens (id 0)."""
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 128, (2, 6))
    mask = np.ones_like(ids)
    ids[1, :2] = 0
    mask[1, :2] = 0
    return paddle.to_tensor(ids, dtype="int64"), paddle.to_tensor(mask, dtype="int64")


def positions(paddle, mask):
    """Position ids that skip left padding (PaddleNLP's Llama counts from 0 otherwise)."""
    values = np.clip(np.cumsum(mask.numpy(), axis=1) - 1, 0, None)
    return paddle.to_tensor(values, dtype="int64")


def logits_of(paddle, model, **inputs):
    with paddle.no_grad():
        return model(**inputs, return_dict=True).logits.numpy()


def trainable(model):
    return [p for p in model.parameters() if not p.stop_gradient]


def train(paddle, model, inputs, steps=3, lr=1e-2, optimizer="adamw"):
    """A few steps of a plain Paddle loop on the model's own loss; returns the losses."""
    model.train()
    parameters = trainable(model)
    if optimizer == "adamw":
        opt = paddle.optimizer.AdamW(learning_rate=lr, parameters=parameters)
    else:
        opt = paddle.optimizer.SGD(learning_rate=lr, parameters=parameters)
    losses = []
    for _ in range(steps):
        loss = model(**inputs, return_dict=True).loss
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    model.eval()
    return losses


def batch(paddle):
    """The left-padded batch with labels: the ids, -100 at padding (PaddleNLP does not shift labels)."""
    ids, mask = ids_and_mask(paddle)
    labels = paddle.where(mask == 1, ids, paddle.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def greedy(model, ids, mask, **kwargs):
    return model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=4, decode_strategy="greedy_search", pad_token_id=0, **kwargs
    )[0]


def numel(parameters):
    return sum(int(np.prod(p.shape)) for p in parameters)


# ---------------------------------------------------------------------- PaddleNLP's prefix model
def paddlenlp_prefix(paddle, model, family, projection):
    """PaddleNLP's PrefixModelForCausalLM on ``model`` for the same prefix as ``config("prefix")``."""
    from paddlenlp.peft import PrefixConfig, PrefixModelForCausalLM
    from paddlenlp.peft.prefix.utils import bloom_postprocess_past_key_value, llama_postprocess_past_key_value

    model_config = model.config
    prefix_config = PrefixConfig(
        num_prefix_tokens=TOKENS,
        num_attention_heads=model_config.num_attention_heads,
        multi_query_group_num=getattr(model_config, "num_key_value_heads", None) if family == "llama" else None,
        num_hidden_layers=model_config.num_hidden_layers if family == "llama" else model_config.n_layer,
        hidden_size=model_config.hidden_size,
        prefix_projection=projection,
        prefix_projection_hidden_size=20,
    )
    postprocess = llama_postprocess_past_key_value if family == "llama" else bloom_postprocess_past_key_value
    prefix_model = PrefixModelForCausalLM(model, prefix_config, postprocess)
    prefix_model.eval()
    return prefix_model


def section_order(columns, num_layers):
    """HF PEFT's interleaved last axis (k0, v0, k1, v1, ...) in PaddleNLP's sections (k0, k1, ..., v0, v1, ...)."""
    lead = columns.shape[:-1]
    blocks = columns.reshape(*lead, num_layers, 2, columns.shape[-1] // (2 * num_layers))
    return np.ascontiguousarray(np.swapaxes(blocks, -3, -2).reshape(columns.shape))


def paddlenlp_prefix_state(state, num_layers):
    """Our prefix (an AdapterState: HF PEFT's interleaved keys/values, torch-layout encoder
    weights) as PaddleNLP's ``prefix_encoder`` state: Sequential indices, Paddle's ``[in, out]``
    Linear layout, and the key/value axis in PaddleNLP's sections (all keys, then all values)."""
    extra = {k.removeprefix("prompt_encoder."): v for k, v in state.extra_tensors.items()}
    if not extra:
        return {"0.weight": section_order(state.tensors["prompt_embeddings"], num_layers)}
    return {
        "0.weight": extra["embedding.weight"],
        "1.weight": extra["transform.0.weight"].T,
        "1.bias": extra["transform.0.bias"],
        "3.weight": section_order(extra["transform.2.weight"].T, num_layers),
        "3.bias": section_order(extra["transform.2.bias"], num_layers),
    }


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_trainable_count_equals_paddlenlp(paddle, base_model, family, projection):
    ours = wrap(base_model, family, "prefix-projection" if projection else "prefix")
    theirs = paddlenlp_prefix(paddle, base_model(family), family, projection)
    ours_trainable, ours_total = ours.get_nb_trainable_parameters()
    assert ours_trainable == numel(trainable(theirs)) > 0
    assert ours_total == numel(theirs.parameters())
    if family == "llama":  # GQA: 2 of 4 heads carry keys and values, head_dim 8
        resolved = ours.peft_config["default"]
        assert (resolved.token_dim, resolved.num_attention_heads) == (16, 2)


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_logits_and_generation_equal_paddlenlp(paddle, base_model, family, projection):
    ours = wrap(base_model, family, "prefix-projection" if projection else "prefix")
    train(paddle, ours, batch(paddle), steps=2)
    state = ours.adapter_state()
    theirs = paddlenlp_prefix(paddle, base_model(family), family, projection)
    theirs_state = paddlenlp_prefix_state(state, ours.peft_config["default"].num_layers)
    assert sorted(theirs_state) == sorted(theirs.prefix_encoder.state_dict())
    theirs.prefix_encoder.set_state_dict(
        {key: paddle.to_tensor(np.ascontiguousarray(value)) for key, value in theirs_state.items()}
    )
    ids, mask = ids_and_mask(paddle)
    ours_logits = logits_of(paddle, ours, input_ids=ids, attention_mask=mask)
    base_logits = logits_of(paddle, ours.get_base_model(), input_ids=ids, attention_mask=mask)
    assert np.abs(ours_logits - base_logits).max() > 1e-3, "the prefix changes the logits"
    assert np.abs(ours_logits - logits_of(paddle, theirs, input_ids=ids, attention_mask=mask)).max() <= 1e-5
    assert np.array_equal(greedy(ours, ids, mask).numpy(), greedy(theirs, ids, mask).numpy())


def test_prefix_cache_interleaves_keys_and_values_per_layer(paddle, base_model):
    model = wrap(base_model, "llama", "prefix")
    encoder = model.prompt_encoder["default"]
    table = encoder.embedding.weight.numpy()  # [T, layers * 2 * 16]
    cache = encoder.past_key_values(3)
    assert len(cache) == 2 and list(cache[0][0].shape) == [3, TOKENS, 2, 8]
    for layer in range(2):
        for kind in range(2):
            block = table[:, (2 * layer + kind) * 16 : (2 * layer + kind + 1) * 16]  # k0 v0 k1 v1
            assert np.array_equal(cache[layer][kind][1].numpy().reshape(TOKENS, 16), block)
    sections = section_order(table, 2)
    assert np.array_equal(sections[:, 16:32], table[:, 32:48]), "PaddleNLP: k0 k1 v0 v1"


def test_prefix_with_hf_positions_equals_the_torch_implementation(paddle, torch, make_model, base_model, tmp_path):
    """The same prefix file on the same Llama weights: loading HF PEFT files on Paddle converts
    them to PaddleNLP's positions (peftplug.interop.prefix_positions rotates the keys by -T), so Paddle's
    default positions give PyTorch's logits; HF's positions passed explicitly no longer do."""
    torch_model = peftplug.get_peft_model(make_model("llama"), config("prefix"))
    torch_model.save_pretrained(tmp_path)
    paddle_base = base_model("llama")
    copy_torch_llama_into_paddle(paddle, make_model("llama"), paddle_base)
    ours = peftplug.PeftModel.from_pretrained(paddle_base, tmp_path)
    ids = np.random.default_rng(1).integers(3, 128, (2, 7))
    with torch.no_grad():
        expected = torch_model(input_ids=torch.from_numpy(ids)).logits.numpy()
    hf_positions = paddle.to_tensor(np.tile(np.arange(7) + TOKENS, (2, 1)), dtype="int64")
    got = logits_of(paddle, ours, input_ids=paddle.to_tensor(ids), position_ids=hf_positions)
    assert np.abs(got - expected).max() > 1e-4, "the keys were converted for positions restarting after the prefix"
    paddlenlp_positions = logits_of(paddle, ours, input_ids=paddle.to_tensor(ids))
    assert np.abs(paddlenlp_positions - expected).max() <= 1e-5


# ---------------------------------------------------------------------- against PyTorch
def copy_torch_llama_into_paddle(paddle, torch_model, paddle_model):
    """Give the PaddleNLP Llama the HF Llama's weights (Linear weights transposed, model. -> llama.)."""
    own = dict(paddle_model.named_parameters())
    copied = set()
    for name, value in torch_model.state_dict().items():
        target = "llama." + name.removeprefix("model.") if name.startswith("model.") else name
        if target not in own:
            continue
        array = value.numpy()
        if array.ndim == 2 and "embed_tokens" not in name:
            array = array.T
        own[target].set_value(paddle.to_tensor(np.ascontiguousarray(array)))
        copied.add(target)
    assert copied == set(own), f"not copied: {sorted(set(own) - copied)[:3]}"


@pytest.mark.parametrize("method", list(METHODS))
def test_counts_and_names_equal_the_torch_implementation(make_model, base_model, method):
    ours = wrap(base_model, "llama", method)
    theirs = peftplug.get_peft_model(make_model("llama"), config(method))
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    paddle_names = {n: tuple(p.shape) for n, p in ours.named_parameters() if n.startswith("prompt_encoder.")}
    torch_names = {n: tuple(p.shape) for n, p in theirs.named_parameters() if n.startswith("prompt_encoder.")}
    assert set(paddle_names) == set(torch_names)
    for name, shape in torch_names.items():
        linear = name.endswith("weight") and ("mlp_head" in name or "transform" in name)
        assert paddle_names[name] == (shape[::-1] if linear else shape), name


@pytest.mark.parametrize("method", [*REPARAMETERISED, "prompt", "prefix"])
def test_torch_adapter_files_give_the_same_table_and_logits_on_paddle(
    paddle, torch, make_model, base_model, method, tmp_path
):
    """Encoder weights are interchangeable: a torch-trained adapter, with its encoder weights,
    resumes on Paddle with the same table; prompt tuning and P-tuning give the same logits."""
    torch_model = peftplug.get_peft_model(make_model("llama"), config(method))
    inputs = {"input_ids": torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(1))}
    inputs["labels"] = inputs["input_ids"]
    optimizer = torch.optim.AdamW([p for p in torch_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        torch_model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch_model.eval()
    torch_model.save_pretrained(tmp_path)
    paddle_base = base_model("llama")
    copy_torch_llama_into_paddle(paddle, make_model("llama"), paddle_base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the encoder weights must be taken, not dropped
        ours = peftplug.PeftModel.from_pretrained(paddle_base, tmp_path, is_trainable=True)
    assert ours.prompt_encoder["default"].reparameterised == (method in REPARAMETERISED)
    table = ours.prompt_encoder["default"].export_prompt()["prompt_embeddings"]
    expected = torch_model.prompt_encoder["default"].export_prompt()["prompt_embeddings"]
    if method == "prefix" or method.startswith("prefix"):  # loaded in PaddleNLP's positions: keys rotated by -T
        expected = peftplug.interop.cross_framework.state_for_model(
            torch_model.adapter_state(), paddle_base, "peft"
        ).tensors["prompt_embeddings"]
    assert np.abs(table - expected).max() <= 1e-5
    if method in EMBEDDING_METHODS:
        with torch.no_grad():
            torch_logits = torch_model(input_ids=inputs["input_ids"]).logits.numpy()
        got = logits_of(paddle, ours, input_ids=paddle.to_tensor(inputs["input_ids"].numpy()))
        assert np.abs(got - torch_logits).max() <= 1e-5


# ---------------------------------------------------------------------- virtual-token forward
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", EMBEDDING_METHODS)
def test_virtual_tokens_equal_concatenating_embeddings_by_hand(paddle, base_model, family, method):
    model = wrap(base_model, family, method)
    train(paddle, model, batch(paddle), steps=1)  # away from the initial values
    ids, mask = ids_and_mask(paddle)
    base = model.get_base_model()
    with paddle.no_grad():
        table = model.prompt_encoder["default"].table()
        embeds = paddle.concat([table.unsqueeze(0).expand([2, TOKENS, 32]), base.get_input_embeddings()(ids)], axis=1)
        full_mask = paddle.concat([paddle.ones([2, TOKENS], dtype="int64"), mask], axis=1)
        labels = paddle.concat([paddle.full([2, TOKENS], -100, dtype="int64"), ids], axis=1)
        expected = base(inputs_embeds=embeds, attention_mask=full_mask, labels=labels, return_dict=True)
        got = model(input_ids=ids, attention_mask=mask, labels=ids, return_dict=True)
    assert list(got.logits.shape) == [2, TOKENS + 6, 128]
    assert np.abs(got.logits.numpy() - expected.logits.numpy()).max() <= 1e-5
    assert abs(float(got.loss) - float(expected.loss)) <= 1e-5
    # Labels are not shifted in PaddleNLP: the loss is over the real positions only.
    real = got.logits.numpy()[:, TOKENS:]
    shifted = real - real.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = -np.take_along_axis(log_probs, ids.numpy()[..., None], axis=-1)[..., 0]
    assert abs(float(got.loss) - picked.mean()) <= 1e-4


def test_explicit_position_ids_follow_the_virtual_tokens(paddle, base_model):
    model = wrap(base_model, "llama", "prompt")
    ids, _ = ids_and_mask(paddle)
    default = logits_of(paddle, model, input_ids=ids)
    explicit = logits_of(paddle, model, input_ids=ids, position_ids=paddle.arange(6, dtype="int64").expand([2, 6]))
    assert np.abs(default - explicit).max() <= 1e-6


# ---------------------------------------------------------------------- training and resuming
@pytest.mark.parametrize(
    "family,method", [*[("llama", m) for m in METHODS], ("bloom", "prompt"), ("bloom", "prefix-projection")]
)
def test_training_lowers_the_loss_and_changes_only_the_encoder(paddle, base_model, family, method):
    model = wrap(base_model, family, method)
    base_before = {n: p.numpy().copy() for n, p in model.get_base_model().named_parameters()}
    encoder_before = {n: p.numpy().copy() for n, p in model.prompt_encoder.named_parameters()}
    assert {id(p) for p in trainable(model)} == {id(p) for p in model.prompt_encoder.parameters()}
    losses = train(paddle, model, batch(paddle), steps=5)
    assert losses[-1] < losses[0]
    for name, parameter in model.get_base_model().named_parameters():
        assert np.array_equal(parameter.numpy(), base_before[name]), name
    assert all(not np.array_equal(p.numpy(), encoder_before[n]) for n, p in model.prompt_encoder.named_parameters())


@pytest.mark.parametrize("method", REPARAMETERISED)
def test_resuming_an_encoder_continues_exactly(paddle, base_model, method, tmp_path):
    inputs = batch(paddle)
    model = wrap(base_model, "llama", method)
    train(paddle, model, inputs, steps=2, optimizer="sgd")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model_encoder.safetensors").is_file()
    uninterrupted = train(paddle, model, inputs, steps=2, optimizer="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = peftplug.PeftModel.from_pretrained(base_model("llama"), tmp_path, is_trainable=True)
    assert resumed.prompt_encoder["default"].reparameterised
    assert resumed.get_nb_trainable_parameters() == model.get_nb_trainable_parameters()
    again = train(paddle, resumed, inputs, steps=2, optimizer="sgd")
    assert np.allclose(again, uninterrupted, rtol=0, atol=1e-6), (again, uninterrupted)


def test_an_hf_peft_file_without_encoder_weights_trains_the_saved_table(paddle, base_model, tmp_path):
    model = wrap(base_model, "llama", "ptuning-mlp")
    model.save_pretrained(tmp_path)
    (tmp_path / "adapter_model_encoder.safetensors").unlink()
    ids, mask = ids_and_mask(paddle)
    with pytest.warns(UserWarning, match="no encoder weights"):
        resumed = peftplug.PeftModel.from_pretrained(base_model("llama"), tmp_path, is_trainable=True)
    assert not resumed.prompt_encoder["default"].reparameterised
    assert resumed.get_nb_trainable_parameters()[0] == TOKENS * 32
    expected = logits_of(paddle, model, input_ids=ids, attention_mask=mask)
    assert np.abs(logits_of(paddle, resumed, input_ids=ids, attention_mask=mask) - expected).max() <= 1e-5


def test_prefix_trains_the_same_with_paddlenlp_recompute(paddle, base_model):
    """PaddleNLP's recompute (what its Trainer switches on) passes the cache through: same gradients."""
    gradients = []
    for recompute in (False, True):
        base = base_model("llama")
        if recompute:
            base.config.recompute = True
            base.recompute_enable()
        model = peftplug.get_peft_model(base, config("prefix"))
        model.prompt_encoder["default"].embedding.weight.set_value(paddle.ones([TOKENS, 64]) * 0.1)
        model.train()
        model(**batch(paddle), return_dict=True).loss.backward()
        gradients.append(model.prompt_encoder["default"].embedding.weight.grad.numpy())
    assert np.abs(gradients[0]).max() > 0
    assert np.abs(gradients[0] - gradients[1]).max() <= 1e-6


@pytest.mark.parametrize("method", ["ptuning-mlp", "prefix-projection"])
def test_paddlenlp_trainer_trains_and_its_checkpoint_loads(paddle, base_model, method, tmp_path):
    from paddlenlp.trainer import Trainer, TrainingArguments

    from peftplug.backends.paddle.trainer import AdapterCheckpointCallback

    model = wrap(base_model, "llama", method)
    base_before = {n: p.numpy().copy() for n, p in model.get_base_model().named_parameters()}
    table_before = model.prompt_encoder["default"].export_prompt()["prompt_embeddings"]
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
    assert trainer.train().global_step == 3
    model.eval()
    table = model.prompt_encoder["default"].export_prompt()["prompt_embeddings"]
    assert np.abs(table - table_before).max() > 1e-4, "Trainer did not train the encoder"
    for name, parameter in model.get_base_model().named_parameters():
        assert np.array_equal(parameter.numpy(), base_before[name]), name
    checkpoint = tmp_path / "checkpoint-3"
    assert (checkpoint / "adapter_model_encoder.safetensors").is_file()
    loaded = peftplug.PeftModel.from_pretrained(base_model("llama"), checkpoint)
    ids, mask = ids_and_mask(paddle)
    expected = logits_of(paddle, model, input_ids=ids, attention_mask=mask)
    assert np.abs(logits_of(paddle, loaded, input_ids=ids, attention_mask=mask) - expected).max() <= 1e-5


def test_two_prompt_adapters_switch_and_train_alone(paddle, base_model):
    model = wrap(base_model, "llama", "ptuning-mlp")
    model.add_adapter("other", config("ptuning-mlp"))
    ids, mask = ids_and_mask(paddle)
    first = logits_of(paddle, model, input_ids=ids, attention_mask=mask)
    model.set_adapter("other")
    assert np.abs(logits_of(paddle, model, input_ids=ids, attention_mask=mask) - first).max() > 1e-4
    assert {id(p) for p in trainable(model)} == {id(p) for p in model.prompt_encoder["other"].parameters()}
    model.delete_adapter("default")
    assert list(model.prompt_encoder.keys()) == ["other"]


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", list(METHODS))
def test_save_and_load_give_the_same_logits(paddle, base_model, family, method, tmp_path):
    model = wrap(base_model, family, method)
    train(paddle, model, batch(paddle), steps=2)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    loaded = peftplug.PeftModel.from_pretrained(base_model(family), tmp_path)
    assert loaded.get_nb_trainable_parameters()[0] == 0, "loaded for inference: nothing trainable"
    ids, mask = ids_and_mask(paddle)
    expected = logits_of(paddle, model, input_ids=ids, attention_mask=mask)
    assert np.abs(logits_of(paddle, loaded, input_ids=ids, attention_mask=mask) - expected).max() <= 1e-5
    assert np.array_equal(greedy(loaded, ids, mask).numpy(), greedy(model, ids, mask).numpy())


def test_prompt_embeddings_have_hf_peft_names_and_shapes(base_model):
    for method, shape in [("prompt", [TOKENS, 32]), ("ptuning-lstm", [TOKENS, 32]), ("prefix", [TOKENS, 64])]:
        state = wrap(base_model, "llama", method).adapter_state()
        assert list(state.tensors) == ["prompt_embeddings"] and list(state.tensors["prompt_embeddings"].shape) == shape


# ---------------------------------------------------------------------- generate
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["prompt", "ptuning-lstm", "prefix"])
def test_generate_batched_left_padded_returns_only_new_tokens(paddle, base_model, family, method):
    model = wrap(base_model, family, method)
    train(paddle, model, batch(paddle), steps=2)
    ids, mask = ids_and_mask(paddle)
    extra = {"position_ids": positions(paddle, mask)} if family == "llama" else {}
    out = greedy(model, ids, mask, **extra).numpy()
    assert out.shape == (2, 4), "only the new tokens: no prompt, no virtual tokens"
    with paddle.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, return_dict=True, **extra).logits
    assert np.array_equal(out[:, 0], logits[:, -1].argmax(-1).numpy()), "the first token is the forward's argmax"
    alone_ids = ids[1:, 2:]
    alone_extra = {"position_ids": paddle.arange(4, dtype="int64").unsqueeze(0)} if family == "llama" else {}
    alone = greedy(model, alone_ids, paddle.ones_like(alone_ids), **alone_extra).numpy()
    assert np.array_equal(out[1], alone[0]), "left padding changes nothing"
    with model.disable_adapter():
        plain = greedy(model, ids, mask, **extra).numpy()
    assert plain.shape == (2, 4)


@pytest.mark.parametrize("method", ["ptuning-mlp", "prefix-projection"])
def test_generate_without_a_mask_builds_one_from_the_pad_token(paddle, base_model, method):
    model = wrap(base_model, "llama", method)
    ids, mask = ids_and_mask(paddle)
    assert np.array_equal(
        model.generate(input_ids=ids, max_new_tokens=3, decode_strategy="greedy_search", pad_token_id=0)[0].numpy(),
        model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=3, decode_strategy="greedy_search", pad_token_id=0
        )[0].numpy(),
    )


# ---------------------------------------------------------------------- init and errors
def test_sample_vocab_and_text_init_copy_word_embeddings(paddle, base_model, tmp_path):
    from paddlenlp.transformers import BertTokenizer

    from peftplug.app.tokenizer import ByteTokenizer

    model = peftplug.get_peft_model(base_model("llama"), config("prompt", prompt_tuning_init="SAMPLE_VOCAB"))
    words = model.get_base_model().get_input_embeddings().weight.numpy()
    for row in model.prompt_encoder["default"].embedding.weight.numpy():
        assert np.abs(words - row).max(axis=1).min() == 0.0
    model = peftplug.get_peft_model(
        base_model("llama"),
        config("prompt", prompt_tuning_init="TEXT", prompt_tuning_init_text="hi", tokenizer=ByteTokenizer()),
    )
    table = model.prompt_encoder["default"].embedding.weight.numpy()
    assert np.array_equal(table, words[[104, 105, 104, 105]])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(str(tmp_path / "tok"))
    model = peftplug.get_peft_model(
        base_model("llama"),
        config(
            "prompt",
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text="hello world",
            tokenizer_name_or_path=str(tmp_path / "tok"),
        ),
    )
    table = model.prompt_encoder["default"].embedding.weight.numpy()
    assert np.array_equal(table, words[[2, 5, 6, 3]]), "[CLS] hello world [SEP], from the saved tokenizer"


def test_bad_setups_are_clear_errors(paddle, base_model):
    seq_cls = peftplug.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2)
    with pytest.raises(ConfigError, match="task_type"):
        peftplug.get_peft_model(base_model("llama"), seq_cls)

    class Plain(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.embed = paddle.nn.Embedding(10, 8)

        def get_input_embeddings(self):
            return self.embed

        def forward(self, input_ids):
            return self.embed(input_ids)

    plain = config("prompt", token_dim=8, num_layers=1, num_attention_heads=2)
    with pytest.raises(PeftplugError, match="inputs_embeds"):
        peftplug.get_peft_model(Plain(), plain)
    prefix = config("prefix", token_dim=8, num_layers=1, num_attention_heads=2)
    with pytest.raises(PeftplugError, match="model_type None"):
        peftplug.get_peft_model(Plain(), prefix)
    model = wrap(base_model, "llama", "prompt")
    ids, _ = ids_and_mask(paddle)
    with pytest.raises(PeftplugError, match=r"attention_mask of shape \[2, 1, 6, 6\]"):
        model(input_ids=ids, attention_mask=paddle.ones([2, 1, 6, 6], dtype="int64"))
    prefixed = wrap(base_model, "llama", "prefix")
    with pytest.raises(PeftplugError, match="past_key_values cannot be passed"):
        prefixed(input_ids=ids, past_key_values=prefixed.prompt_encoder["default"].past_key_values(2))
    with pytest.raises(PeftplugError, match="merge"):
        model.merge_and_unload()
