"""Prompt tuning, P-tuning and prefix tuning on PyTorch against the real HF PEFT: counts, files
both ways (logits and greedy generation), TEXT init, exact resume of the encoders, bad input."""

from __future__ import annotations

import json
import warnings

import pytest
from torch_lm import logits_of, model_inputs

import peftplug
from peftplug.errors import ConfigError, PeftplugError

peft = pytest.importorskip("peft")

TOKENS = 4
FAMILIES = ["llama", "t5"]
TASKS = {"llama": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM", "bert": "SEQ_CLS"}
# name -> (config class name, shared by peftplug and peft; fields)
METHODS = {
    "prompt": ("PromptTuningConfig", {}),
    "prompt-vocab": ("PromptTuningConfig", {"prompt_tuning_init": "SAMPLE_VOCAB"}),
    "ptuning-mlp": ("PromptEncoderConfig", {"encoder_hidden_size": 24}),
    "ptuning-lstm": ("PromptEncoderConfig", {"encoder_reparameterization_type": "LSTM", "encoder_hidden_size": 12}),
    "prefix": ("PrefixTuningConfig", {}),
    "prefix-projection": ("PrefixTuningConfig", {"prefix_projection": True, "encoder_hidden_size": 20}),
}
MAIN = ["prompt", "ptuning-mlp", "ptuning-lstm", "prefix", "prefix-projection"]
REPARAMETERISED = ["ptuning-mlp", "ptuning-lstm", "prefix-projection"]


def config(library, method, family, **extra):
    """The ``method`` config of ``library`` (peftplug or peft) for ``family``."""
    class_name, fields = METHODS[method]
    fields = {"task_type": TASKS[family], "num_virtual_tokens": TOKENS, **fields, **extra}
    return getattr(library, class_name)(**fields)


def both(make_model, method, family, **extra):
    """The same base wrapped by peftplug and by peft with the same config."""
    ours = peftplug.get_peft_model(make_model(family), config(peftplug, method, family, **extra))
    theirs = peft.get_peft_model(make_model(family), config(peft, method, family, **extra))
    return ours, theirs


def batch(torch, family):
    """A training batch with labels (causal-LM labels are the input ids)."""
    inputs = dict(model_inputs(torch, family))
    if family == "t5":
        inputs = {"input_ids": inputs["input_ids"], "labels": inputs["decoder_input_ids"].contiguous()}
    else:
        inputs["labels"] = inputs["input_ids"].clone()
    return inputs


def eval_inputs(torch, family):
    """Inputs for comparing logits (no labels; T5's decoder reads the target ids)."""
    inputs = batch(torch, family)
    labels = inputs.pop("labels")
    if family == "t5":
        inputs["decoder_input_ids"] = labels
    return inputs


def train(torch, model, inputs, steps=3, lr=1e-2, optimizer="adamw"):
    """A few optimizer steps on the language-model loss; returns the last loss."""
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(parameters, lr=lr) if optimizer == "adamw" else torch.optim.SGD(parameters, lr=lr)
    for _ in range(steps):
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return loss.item()


def left_padded(torch):
    """A left-padded batch: the second row has two pad tokens (id 0) in front."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (2, 6), generator=generator)
    mask = torch.ones_like(ids)
    ids[1, :2] = 0
    mask[1, :2] = 0
    return ids, mask


def generate(model, ids, mask, **kwargs):
    return model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0, **kwargs
    )


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------- counts and configs
@pytest.mark.parametrize("family", [*FAMILIES, "bert"])
@pytest.mark.parametrize("method", list(METHODS))
def test_parameter_counts_equal_hf_peft(make_model, family, method):
    ours, theirs = both(make_model, method, family)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert ours.get_nb_trainable_parameters()[0] > 0
    encoder_names = lambda model: sorted(  # noqa: E731
        (n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad and n.startswith("prompt_encoder.")
    )
    assert encoder_names(ours) == encoder_names(theirs)
    ours_config, theirs_config = ours.peft_config["default"], theirs.peft_config["default"]
    for field in ["token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules"]:
        assert getattr(ours_config, field) == getattr(theirs_config, field), field
    if hasattr(ours_config, "encoder_hidden_size"):
        assert ours_config.encoder_hidden_size == theirs_config.encoder_hidden_size


def test_an_mlp_encoder_ignores_encoder_num_layers_as_hf_peft_does_and_says_so(make_model):
    with pytest.warns(UserWarning, match="encoder_num_layers=3 is ignored; exactly 2 hidden layers"):
        ours, theirs = both(make_model, "ptuning-mlp", "llama", encoder_num_layers=3)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert [n for n, _ in ours.prompt_encoder.named_parameters()] == [
        n for n, _ in theirs.prompt_encoder.named_parameters()
    ]


def test_print_trainable_parameters_matches_hf_peft(make_model, capsys):
    ours, theirs = both(make_model, "ptuning-lstm", "llama")
    ours.print_trainable_parameters()
    theirs.print_trainable_parameters()
    ours_line, theirs_line = capsys.readouterr().out.strip().splitlines()
    assert ours_line == theirs_line and ours_line.startswith("trainable params: ")


def test_prefix_has_the_key_value_width_on_a_gqa_llama(make_model):
    """2 of 4 heads carry keys and values: the prefix is head_dim 8 * 2 heads = 16 wide."""
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prefix", "llama"))
    resolved = model.peft_config["default"]
    assert (resolved.token_dim, resolved.num_attention_heads, resolved.num_layers) == (16, 2, 2)
    assert tuple(model.prompt_encoder["default"].embedding.weight.shape) == (TOKENS, 2 * 2 * 16)
    cache = model.prompt_encoder["default"].past_key_values(3)
    assert len(cache) == 2 and tuple(cache.layers[0].keys.shape) == (3, 2, TOKENS, 8)
    prompt = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prompt", "llama")).peft_config["default"]
    assert (prompt.token_dim, prompt.num_attention_heads) == (32, 4), "prompt tuning keeps the hidden size"


def test_prefix_cache_interleaves_keys_and_values_per_layer(torch, make_model):
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prefix", "llama"))
    encoder = model.prompt_encoder["default"]
    table = encoder.embedding.weight.detach()  # [T, layers * 2 * 16]
    cache = encoder.past_key_values(1)
    for layer in range(2):
        for kind, tensor in enumerate([cache.layers[layer].keys, cache.layers[layer].values]):
            block = table[:, (2 * layer + kind) * 16 : (2 * layer + kind + 1) * 16]  # k0 v0 k1 v1
            assert torch.equal(tensor[0].permute(1, 0, 2).reshape(TOKENS, 16), block)


@pytest.mark.parametrize("method", MAIN)
def test_config_file_round_trips_with_peft(make_model, method, tmp_path):
    ours = peftplug.get_peft_model(make_model("llama"), config(peftplug, method, "llama"))
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    theirs = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert type(theirs).__name__ == METHODS[method][0] and theirs.token_dim == saved["token_dim"]
    theirs_model = peft.get_peft_model(make_model("llama"), config(peft, method, "llama"))
    theirs_model.save_pretrained(tmp_path / "theirs")
    theirs_saved = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    for informational in ["peft_version", "auto_mapping"]:  # written by HF PEFT only, read and dropped by peftplug
        theirs_saved.pop(informational, None)
    assert saved == theirs_saved, "the same fields and values as HF PEFT writes"
    back = peftplug.AdapterConfig.from_pretrained(tmp_path / "theirs")
    assert type(back).__name__ == METHODS[method][0] and back.num_virtual_tokens == TOKENS


# ---------------------------------------------------------------------- files both ways
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", MAIN)
def test_peftplug_adapter_loads_in_peft_with_same_logits_and_generation(torch, make_model, family, method, tmp_path):
    model = peftplug.get_peft_model(make_model(family), config(peftplug, method, family))
    before = logits_of(torch, model, eval_inputs(torch, family))
    train(torch, model, batch(torch, family))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model_encoder.safetensors").is_file() == (method in REPARAMETERISED)
    loaded = peft.PeftModel.from_pretrained(make_model(family), tmp_path)
    inputs = eval_inputs(torch, family)
    expected = logits_of(torch, model, inputs)
    assert max_diff(expected, before) > 1e-4, "training had no effect"
    assert max_diff(logits_of(torch, loaded, inputs), expected) <= 1e-5
    ids, mask = left_padded(torch)
    assert torch.equal(generate(model, ids, mask), generate(loaded, ids, mask))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", MAIN)
def test_peft_adapter_loads_in_peftplug_with_same_logits_and_generation(torch, make_model, family, method, tmp_path):
    theirs = peft.get_peft_model(make_model(family), config(peft, method, family))
    train(torch, theirs, batch(torch, family))
    theirs.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(make_model(family), tmp_path)
    assert type(ours.peft_config["default"]).__name__ == METHODS[method][0]
    reference = peft.PeftModel.from_pretrained(make_model(family), tmp_path)  # HF PEFT's inference model
    assert ours.get_nb_trainable_parameters()[1] == reference.get_nb_trainable_parameters()[1]
    # HF PEFT leaves an inference prompt encoder's table trainable; peftplug freezes it, as for LoRA.
    assert ours.get_nb_trainable_parameters()[0] == 0, "loaded for inference: nothing trainable"
    inputs = eval_inputs(torch, family)
    assert max_diff(logits_of(torch, ours, inputs), logits_of(torch, theirs, inputs)) <= 1e-5
    ids, mask = left_padded(torch)
    assert torch.equal(generate(ours, ids, mask), generate(theirs, ids, mask))


def _table_size(peft_model) -> int:
    return int(peft_model.get_prompt_embedding_to_save("default").numel())


@pytest.mark.parametrize("method", ["prompt", "ptuning-mlp", "prefix"])
def test_sequence_classification_round_trips_with_peft(torch, make_model, method, tmp_path):
    model = peftplug.get_peft_model(make_model("bert"), config(peftplug, method, "bert"))
    assert model.peft_config["default"].modules_to_save == ["classifier", "score"]
    inputs = dict(model_inputs(torch, "bert"), token_type_ids=torch.zeros(2, 7, dtype=torch.long))
    inputs["labels"] = torch.tensor([0, 2])
    train(torch, model, inputs)
    model.save_pretrained(tmp_path)
    saved = peftplug.PeftModel.from_pretrained(make_model("bert"), tmp_path).adapter_state().tensors
    assert sorted(saved) == ["base_model.classifier.bias", "base_model.classifier.weight", "prompt_embeddings"]
    theirs = peft.PeftModel.from_pretrained(make_model("bert"), tmp_path)
    test_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    expected = logits_of(torch, model, test_inputs)
    assert max_diff(logits_of(torch, theirs, test_inputs), expected) <= 1e-5
    theirs.save_pretrained(tmp_path / "theirs")
    back = peftplug.PeftModel.from_pretrained(make_model("bert"), tmp_path / "theirs")
    assert max_diff(logits_of(torch, back, test_inputs), expected) <= 1e-5


# ---------------------------------------------------------------------- forward and generate
@pytest.mark.parametrize("method", MAIN)
def test_forward_matches_hf_peft_with_labels_masks_and_positions(torch, make_model, method):
    """Same loss and logits as HF PEFT on a left-padded batch with labels (virtual positions
    ignored in the loss), with and without explicit position ids."""
    ours, theirs = both(make_model, method, "llama")
    theirs.load_state_dict(ours.state_dict(), strict=False)
    for name, parameter in theirs.prompt_encoder.named_parameters():
        assert torch.equal(parameter, dict(ours.prompt_encoder.named_parameters())[name])
    ids, mask = left_padded(torch)
    labels = ids.masked_fill(mask == 0, -100)
    for extra in [{}, {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # both warn that position ids are ignored (not prefix)
            got = ours(input_ids=ids, attention_mask=mask, labels=labels, **extra)
            want = theirs(input_ids=ids, attention_mask=mask, labels=labels, **extra)
        assert max_diff(got.logits, want.logits) <= 1e-6 and abs(got.loss.item() - want.loss.item()) <= 1e-6
        expected_length = ids.shape[1] + (0 if method.startswith("prefix") else TOKENS)
        assert got.logits.shape == (2, expected_length, 128)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_forward_seen_on_the_class_adds_the_virtual_tokens_too(torch, make_model, method):
    """``type(model).forward(model, ...)``, which a subclass's ``super().forward`` or a wrapper
    that rebinds ``forward`` calls, runs as ``model(...)`` does, labels included."""
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, method, "llama")).eval()
    ids, mask = left_padded(torch)
    labels = ids.masked_fill(mask == 0, -100)
    want = model(input_ids=ids, attention_mask=mask, labels=labels)
    got = type(model).forward(model, input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.equal(got.logits, want.logits) and torch.equal(got.loss, want.loss)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", MAIN)
def test_generate_returns_no_virtual_tokens(torch, make_model, family, method):
    model = peftplug.get_peft_model(make_model(family), config(peftplug, method, family))
    ids, mask = left_padded(torch)
    out = generate(model, ids, mask)
    if family == "t5":
        assert out.shape[0] == 2 and out.shape[1] <= 5 and bool((out[:, 0] == 0).all()), (
            "decoder start, then new tokens"
        )
    else:
        assert out.shape == (2, ids.shape[1] + 4) and torch.equal(out[:, : ids.shape[1]], ids)
    sampled = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=True, top_k=5, pad_token_id=0
    )
    assert sampled.shape[0] == 2 and (family == "t5" or torch.equal(sampled[:, : ids.shape[1]], ids))


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_disable_adapter_runs_the_base_model(torch, make_model, method):
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, method, "llama"))
    inputs = eval_inputs(torch, "llama")
    base = logits_of(torch, make_model("llama"), inputs)
    assert logits_of(torch, model, inputs).shape[1] == base.shape[1] + (TOKENS if method == "prompt" else 0)
    with model.disable_adapter():
        assert torch.equal(logits_of(torch, model, inputs), base)
    ids, mask = left_padded(torch)
    with model.disable_adapter():
        assert torch.equal(generate(model, ids, mask), generate(make_model("llama"), ids, mask))


def test_trainer_trains_a_prompt_adapter_and_writes_checkpoints(torch, make_model, tmp_path):
    """The shared word embeddings appear once in the state dict, so Trainer's safetensors
    checkpoint of the whole model is written."""
    transformers = pytest.importorskip("transformers")
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "ptuning-mlp", "llama"))
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 128, (8,), generator=generator).tolist()} for _ in range(8)]
    dataset = [dict(row, labels=row["input_ids"]) for row in rows]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="steps",
        save_steps=2,
        use_cpu=True,
    )
    before = model.prompt_encoder["default"].table().detach().clone()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert transformers.Trainer(model=model, args=args, train_dataset=dataset).train().global_step == 2
    assert not torch.equal(model.prompt_encoder["default"].table().detach(), before)
    assert all(torch.equal(dict(model.named_parameters())[n], v) for n, v in frozen.items())
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").is_file()


# ---------------------------------------------------------------------- TEXT init
def _tokenizer(tmp_path):
    """A tiny word-level tokenizer (ids 0..19), saved where AutoTokenizer finds it."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = "classify the sentiment of this review as positive negative or neutral please".split()
    vocab = {"[UNK]": 0, "[PAD]": 1, **{word: i + 5 for i, word in enumerate(words)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    return transformers.AutoTokenizer.from_pretrained(tmp_path / "tokenizer")


@pytest.mark.parametrize(
    ("text", "tokens", "expected_ids"),
    [
        ("classify this review", 7, [5, 9, 10, 5, 9, 10, 5]),  # repeated
        ("classify the sentiment of this review as positive", 3, [5, 6, 7]),  # cut
    ],
    ids=["repeated", "cut"],
)
@pytest.mark.parametrize("given", ["path", "object"])
def test_text_init_copies_the_word_embeddings_of_the_text(
    torch, make_model, tmp_path, text, tokens, expected_ids, given
):
    tokenizer = _tokenizer(tmp_path)
    source = {"tokenizer_name_or_path": str(tmp_path / "tokenizer")} if given == "path" else {"tokenizer": tokenizer}
    model = peftplug.get_peft_model(
        make_model("llama"),
        peftplug.PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=tokens,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=text,
            **source,
        ),
    )
    words = make_model("llama").get_input_embeddings().weight
    table = model.prompt_encoder["default"].embedding.weight
    assert table.dtype == torch.float32 and table.requires_grad
    assert torch.equal(table, words[torch.tensor(expected_ids)])
    assert model.peft_config["default"].tokenizer_name_or_path == str(tmp_path / "tokenizer")
    theirs = peft.get_peft_model(
        make_model("llama"),
        peft.PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=tokens,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tmp_path / "tokenizer"),
        ),
    )
    assert torch.equal(theirs.prompt_encoder["default"].embedding.weight, table), "HF PEFT's TEXT init"


def test_sample_vocab_init_copies_rows_of_the_word_embeddings(torch, make_model):
    model = peftplug.get_peft_model(
        make_model("llama"), config(peftplug, "prompt-vocab", "llama", num_virtual_tokens=6)
    )
    words = make_model("llama").get_input_embeddings().weight
    table = model.prompt_encoder["default"].embedding.weight
    assert table.dtype == torch.float32 and table.shape == (6, 32)
    assert all(any(torch.equal(row, word) for word in words) for row in table)


def test_text_init_config_saves_without_the_tokenizer_object_and_loads_in_peft(make_model, tmp_path):
    tokenizer = _tokenizer(tmp_path)
    cfg = peftplug.PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=3,
        prompt_tuning_init=peftplug.PromptTuningInit.TEXT,
        prompt_tuning_init_text="positive or negative",
        tokenizer=tokenizer,
    )
    assert cfg.prompt_tuning_init == "TEXT" and "tokenizer" not in cfg.to_dict()
    peftplug.get_peft_model(make_model("llama"), cfg).save_pretrained(tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(make_model("llama"), tmp_path / "adapter")
    assert loaded.peft_config["default"].tokenizer_name_or_path == str(tmp_path / "tokenizer")


# ---------------------------------------------------------------------- resuming the encoders
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", REPARAMETERISED)
def test_resuming_an_encoder_continues_exactly(torch, make_model, family, method, tmp_path):
    """Saved with its encoder, reloaded trainable: one more step equals the never-saved model's step."""
    inputs = batch(torch, family)
    model = peftplug.get_peft_model(make_model(family), config(peftplug, method, family))
    train(torch, model, inputs)
    model.save_pretrained(tmp_path)
    resumed = peftplug.PeftModel.from_pretrained(make_model(family), tmp_path, is_trainable=True)
    assert resumed.get_nb_trainable_parameters() == model.get_nb_trainable_parameters()
    assert sorted(resumed.state_dict()) == sorted(model.state_dict())
    eval_batch = eval_inputs(torch, family)
    assert max_diff(logits_of(torch, resumed, eval_batch), logits_of(torch, model, eval_batch)) <= 1e-6
    losses = []
    for resumable in (model, resumed):
        torch.manual_seed(7)  # T5's dropout draws the same masks for both
        losses.append(train(torch, resumable, inputs, steps=2, optimizer="sgd", lr=0.1))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert max_diff(logits_of(torch, resumed, eval_batch), logits_of(torch, model, eval_batch)) <= 1e-5


@pytest.mark.parametrize("method", REPARAMETERISED)
def test_resuming_without_encoder_weights_trains_the_saved_table(torch, make_model, method, tmp_path):
    """An adapter saved by HF PEFT has no encoder weights: peftplug warns and trains the saved
    prompt directly, starting exactly where the adapter was."""
    theirs = peft.get_peft_model(make_model("llama"), config(peft, method, "llama"))
    train(torch, theirs, batch(torch, "llama"))
    theirs.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="holds no encoder weights"):
        resumed = peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path, is_trainable=True)
    eval_batch = eval_inputs(torch, "llama")
    assert max_diff(logits_of(torch, resumed, eval_batch), logits_of(torch, theirs, eval_batch)) <= 1e-5
    assert resumed.get_nb_trainable_parameters()[0] == _table_size(theirs)
    before = logits_of(torch, resumed, eval_batch)
    train(torch, resumed, batch(torch, "llama"), steps=1)
    assert max_diff(logits_of(torch, resumed, eval_batch), before) > 1e-5, "the table trains"


def test_a_stale_encoder_file_is_detected(torch, make_model, tmp_path):
    """An encoder file left over from an earlier save does not override the prompt HF PEFT wrote."""
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "ptuning-mlp", "llama"))
    model.save_pretrained(tmp_path)
    stale = (tmp_path / "adapter_model_encoder.safetensors").read_bytes()
    train(torch, model, batch(torch, "llama"))
    model.save_pretrained(tmp_path)
    (tmp_path / "adapter_model_encoder.safetensors").write_bytes(stale)
    with pytest.warns(UserWarning, match="do not reproduce its prompt_embeddings"):
        resumed = peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path, is_trainable=True)
    eval_batch = eval_inputs(torch, "llama")
    assert max_diff(logits_of(torch, resumed, eval_batch), logits_of(torch, model, eval_batch)) <= 1e-5


# ---------------------------------------------------------------------- adapters and bad input
def test_prompt_adapters_of_one_method_switch_and_train_alone(torch, make_model, tmp_path):
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prompt", "llama"))
    model.add_adapter("other", config(peftplug, "prompt", "llama", num_virtual_tokens=2))
    inputs = eval_inputs(torch, "llama")
    assert logits_of(torch, model, inputs).shape[1] == 7 + TOKENS
    model.set_adapter("other")
    assert logits_of(torch, model, inputs).shape[1] == 7 + 2
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompt_encoder.other.embedding.weight"}
    model.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_model("llama"), tmp_path / "other")
    assert max_diff(logits_of(torch, theirs, inputs), logits_of(torch, model, inputs)) <= 1e-5
    model.delete_adapter("default")
    assert list(model.prompt_encoder) == ["other"]


def test_mixing_methods_and_merging_are_refused(make_model):
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prompt", "llama"))
    with pytest.raises(PeftplugError, match="holds prompt_tuning adapters; a prefix_tuning adapter cannot be added"):
        model.add_adapter("prefix", config(peftplug, "prefix", "llama"))
    with pytest.raises(PeftplugError, match="holds prompt_tuning adapters; a lora adapter cannot be added"):
        model.add_adapter("lora", peftplug.LoraConfig())
    with pytest.raises(PeftplugError, match="prompt-learning adapter .* nothing to merge"):
        model.merge_and_unload()
    assert model.unload() is model.base_model.model


@pytest.mark.parametrize(
    ("make_config", "field"),
    [
        (lambda: peftplug.PromptTuningConfig(num_virtual_tokens=0), "num_virtual_tokens"),
        (lambda: peftplug.PrefixTuningConfig(num_virtual_tokens=-2), "num_virtual_tokens"),
        (lambda: peftplug.PromptEncoderConfig(), "num_virtual_tokens"),
        (
            lambda: peftplug.PromptTuningConfig(
                num_virtual_tokens=4, prompt_tuning_init="TEXT", tokenizer_name_or_path="x"
            ),
            "prompt_tuning_init_text",
        ),
        (
            lambda: peftplug.PromptTuningConfig(
                num_virtual_tokens=4, prompt_tuning_init="TEXT", prompt_tuning_init_text="hi"
            ),
            "tokenizer_name_or_path",
        ),
        (lambda: peftplug.PromptTuningConfig(num_virtual_tokens=4, prompt_tuning_init="WORDS"), "prompt_tuning_init"),
        (lambda: peftplug.PromptTuningConfig(num_virtual_tokens=4, tokenizer_kwargs={"a": 1}), "tokenizer_kwargs"),
        (
            lambda: peftplug.PromptEncoderConfig(num_virtual_tokens=4, encoder_reparameterization_type="GRU"),
            "encoder_reparameterization_type",
        ),
        (lambda: peftplug.PromptEncoderConfig(num_virtual_tokens=4, encoder_dropout=1.5), "encoder_dropout"),
        (
            lambda: peftplug.PrefixTuningConfig(num_virtual_tokens=4, num_transformer_submodules=3),
            "num_transformer_submodules",
        ),
    ],
)
def test_bad_configs_name_the_field(make_config, field):
    with pytest.raises(ConfigError) as error:
        make_config()
    assert error.value.field == field and f"{field}=" in str(error.value)


def test_bad_setups_are_clear_errors(torch, make_model, tmp_path):
    with pytest.raises(ConfigError, match="task_type=None.*CAUSAL_LM, SEQ_2_SEQ_LM, SEQ_CLS"):
        peftplug.get_peft_model(make_model("llama"), peftplug.PromptTuningConfig(num_virtual_tokens=4))
    with pytest.raises(ConfigError, match="num_layers=None.*no config"):
        peftplug.get_peft_model(torch.nn.Sequential(torch.nn.Embedding(10, 4)), config(peftplug, "prompt", "llama"))
    with pytest.raises(ConfigError, match="tokenizer_name_or_path=.*AutoTokenizer"):
        peftplug.get_peft_model(
            make_model("llama"),
            peftplug.PromptTuningConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=4,
                prompt_tuning_init="TEXT",
                prompt_tuning_init_text="hi",
                tokenizer_name_or_path=str(tmp_path / "missing"),
            ),
        )
    checkpointed = make_model("llama")
    checkpointed.gradient_checkpointing_enable()
    with pytest.raises(PeftplugError, match="prefix tuning does not work with gradient checkpointing"):
        peftplug.get_peft_model(checkpointed, config(peftplug, "prefix", "llama"))
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prefix", "llama"))
    model.base_model.model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(PeftplugError, match="prefix tuning does not work with gradient checkpointing"):
        model(**batch(torch, "llama"))
    # Prompt tuning trains with gradient checkpointing.
    prompt = peftplug.get_peft_model(checkpointed, config(peftplug, "prompt", "llama")).train()
    prompt(**batch(torch, "llama")).loss.backward()
    assert prompt.prompt_encoder["default"].embedding.weight.grad is not None


def test_an_adapter_without_prompt_embeddings_is_refused(make_model, tmp_path):
    model = peftplug.get_peft_model(make_model("llama"), config(peftplug, "prompt", "llama"))
    state = model.adapter_state()
    state.tensors = {"something_else": state.tensors["prompt_embeddings"]}
    from peftplug.adapter_io import write_adapter

    write_adapter(state, tmp_path)
    with pytest.raises(peftplug.errors.AdapterLoadError, match="no 'prompt_embeddings' tensor"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    model.save_pretrained(tmp_path / "wide")
    cfg = json.loads((tmp_path / "wide" / "adapter_config.json").read_text())
    (tmp_path / "wide" / "adapter_config.json").write_text(json.dumps(dict(cfg, num_virtual_tokens=TOKENS + 1)))
    with pytest.raises(peftplug.errors.AdapterShapeError, match="prompt_embeddings.*\\[4, 32\\].*\\[5, 32\\]"):
        peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path / "wide")
