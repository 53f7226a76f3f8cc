"""The paddlenlp format plugin against the real PaddleNLP: files written by ``paddlenlp.peft``'s
LoRAModel and PrefixModelForCausalLM read into the canonical (HF PEFT) state and written back so
that PaddleNLP loads the same parameters and gives the same logits; HF PEFT -> paddlenlp -> HF
PEFT bit-exact; the safe ``.pdparams`` reader (a malicious pickle is refused and not run,
truncated and corrupted files are named); config mapping and refused fields; paddleformers'
safetensors variant; end to end with peftplug's Paddle backend for all five methods."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import peftplug
from peftplug.adapter_io import detect_format, read_adapter, write_adapter
from peftplug.errors import AdapterLoadError, ConfigError
from peftplug.files import content_bytes
from peftplug.pdparams import pdparams_bytes, read_pdparams
from peftplug.plugins.formats import paddlenlp_targets
from peftplug.state import AdapterState

TOKENS = 3


@pytest.fixture(scope="module")
def pnlp(paddle):
    """paddlenlp.peft (skips without paddlenlp)."""
    return pytest.importorskip("paddlenlp.peft")


def ids_batch(paddle):
    rng = np.random.default_rng(1)
    return paddle.to_tensor(rng.integers(3, 128, size=(2, 7)), dtype="int64")


def logits(paddle, model, ids, **kwargs):
    with paddle.no_grad():
        out = model(input_ids=ids, **kwargs)
    return (out[0] if isinstance(out, (tuple, list)) else out.logits).numpy()


def randomise(paddle, layer, seed=3, scale=0.2):
    """Random values for every parameter of ``layer`` (LoRA B and prefix layers start at zero or
    near it; random values make every check see each element)."""
    rng = np.random.default_rng(seed)
    for _, parameter in layer.named_parameters():
        parameter.set_value(paddle.to_tensor(rng.normal(0, scale, parameter.shape).astype("float32")))


def base(paddle, make_paddle_model, family="llama"):
    """The tiny PaddleNLP model; Bloom's Linear weights re-drawn (PaddleNLP 2.8.1's Bloom init
    zeroes them, which hides any prefix)."""
    model = make_paddle_model(family)
    if family == "bloom":
        rng = np.random.default_rng(0)
        for name, parameter in model.named_parameters():
            if "layernorm" not in name and "word_embeddings" not in name:
                parameter.set_value(paddle.to_tensor(rng.normal(0.0, 0.2, parameter.shape).astype("float32")))
    return model


def paddlenlp_lora(paddle, pnlp, make_paddle_model, **fields):
    """PaddleNLP's LoRAModel on the tiny Llama, every LoRA (and trainable) parameter random."""
    fields.setdefault("target_modules", [".*q_proj", ".*v_proj"])
    model = pnlp.LoRAModel(base(paddle, make_paddle_model), pnlp.LoRAConfig(r=4, lora_alpha=8, **fields))
    rng = np.random.default_rng(5)
    for parameter in model.model.parameters():
        if not parameter.stop_gradient:
            values = paddle.to_tensor(rng.normal(0, 0.2, parameter.shape).astype("float32"))
            parameter.set_value(values.astype(parameter.dtype))
    model.eval()
    return model


def trained_params(model) -> dict[str, np.ndarray]:
    return {name: p.numpy() for name, p in model.named_parameters() if not p.stop_gradient}


def paddlenlp_prefix(paddle, pnlp, model, family, projection):
    """PaddleNLP's PrefixModelForCausalLM (GQA for Llama: 4 heads, 2 key/value groups)."""
    from paddlenlp.peft.prefix.utils import bloom_postprocess_past_key_value, llama_postprocess_past_key_value

    config = model.config
    prefix_config = pnlp.PrefixConfig(
        num_prefix_tokens=TOKENS,
        num_attention_heads=config.num_attention_heads,
        multi_query_group_num=config.num_key_value_heads if family == "llama" else None,
        num_hidden_layers=config.num_hidden_layers if family == "llama" else config.n_layer,
        hidden_size=config.hidden_size,
        prefix_projection=projection,
        prefix_projection_hidden_size=20,
    )
    postprocess = llama_postprocess_past_key_value if family == "llama" else bloom_postprocess_past_key_value
    return pnlp.PrefixModelForCausalLM(model, prefix_config, postprocess), postprocess


def load_prefix(pnlp, model, family, directory):
    from paddlenlp.peft.prefix.utils import bloom_postprocess_past_key_value, llama_postprocess_past_key_value

    postprocess = llama_postprocess_past_key_value if family == "llama" else bloom_postprocess_past_key_value
    loaded = pnlp.PrefixModelForCausalLM.from_pretrained(model, str(directory), postprocess)
    loaded.eval()
    return loaded


def mask_for(paddle, ids):
    return paddle.ones(ids.shape, dtype="int64")


# ====================================================================== LoRA
def test_paddlenlp_lora_files_read_as_canonical_tensors(paddle, pnlp, make_paddle_model, tmp_path):
    theirs = paddlenlp_lora(paddle, pnlp, make_paddle_model)
    theirs.save_pretrained(str(tmp_path))
    assert detect_format(tmp_path).name == "paddlenlp"
    state = read_adapter(tmp_path)
    params = trained_params(theirs.model)
    assert len(params) == 8 and len(state.tensors) == 8
    for name, value in params.items():
        # PaddleNLP: lora_A [in, r], lora_B [r, out]; canonical: .weight, [r, in] / [out, r].
        assert np.array_equal(state.tensors[f"base_model.model.{name}.weight"], value.T), name
    config = state.config
    assert (config.r, config.lora_alpha, config.bias, config.use_rslora) == (4, 8, "none", False)
    assert config.target_modules == "(?:.*q_proj)|(?:.*v_proj)"


def test_our_lora_files_load_in_paddlenlp_with_equal_parameters_and_logits(paddle, pnlp, make_paddle_model, tmp_path):
    theirs = paddlenlp_lora(paddle, pnlp, make_paddle_model)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    state = read_adapter(tmp_path / "theirs")
    write_adapter(state, tmp_path / "ours", "paddlenlp")
    loaded = pnlp.LoRAModel.from_pretrained(base(paddle, make_paddle_model), str(tmp_path / "ours"))
    loaded.eval()
    expected = trained_params(theirs.model)
    got = trained_params(loaded.model)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
    ids = ids_batch(paddle)
    assert np.array_equal(logits(paddle, loaded, ids), logits(paddle, theirs, ids))
    # The same files: the config byte for byte, the tensors in the same order with equal values.
    for name in ("lora_config.json",):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes()
    ours_t, theirs_t = (
        read_pdparams(tmp_path / "ours/lora_model_state.pdparams"),
        read_pdparams(tmp_path / "theirs/lora_model_state.pdparams"),
    )
    assert list(ours_t) == list(theirs_t)
    assert all(np.array_equal(ours_t[k], theirs_t[k]) and ours_t[k].dtype == theirs_t[k].dtype for k in ours_t)


def test_pdparams_bytes_are_what_paddle_save_writes_and_paddle_load_reads(paddle, pnlp, make_paddle_model, tmp_path):
    theirs = paddlenlp_lora(paddle, pnlp, make_paddle_model)
    theirs.save_pretrained(str(tmp_path))
    raw = (tmp_path / "lora_model_state.pdparams").read_bytes()
    trusted = pickle.loads(raw)  # our own test file
    names = trusted.pop("StructuredToParameterName@@")
    assert pdparams_bytes(trusted, names) == raw
    path = tmp_path / "mine.pdparams"
    path.write_bytes(pdparams_bytes({"a": np.arange(6, dtype="float32").reshape(2, 3), "b": np.ones(2, "float16")}))
    loaded = paddle.load(str(path), return_numpy=True)
    assert sorted(loaded) == ["a", "b"] and np.array_equal(loaded["a"], np.arange(6).reshape(2, 3))
    assert loaded["b"].dtype == np.float16


def test_trainable_modules_map_to_modules_to_save_and_back(paddle, pnlp, make_paddle_model, tmp_path):
    theirs = paddlenlp_lora(
        paddle, pnlp, make_paddle_model, target_modules=[".*q_proj"], trainable_modules=["lm_head.weight"]
    )
    theirs.save_pretrained(str(tmp_path / "theirs"))
    state = read_adapter(tmp_path / "theirs")
    assert state.config.modules_to_save == ["lm_head"]
    head = theirs.model.lm_head.weight.numpy()
    assert np.array_equal(state.tensors["base_model.model.lm_head.weight"], head)  # a head keeps its layout
    write_adapter(state, tmp_path / "ours", "paddlenlp")
    assert json.loads((tmp_path / "ours/lora_config.json").read_text())["trainable_modules"] == ["lm_head\\.weight"]
    loaded = pnlp.LoRAModel.from_pretrained(base(paddle, make_paddle_model), str(tmp_path / "ours"))
    assert np.array_equal(loaded.model.lm_head.weight.numpy(), head)
    assert not loaded.model.lm_head.weight.stop_gradient
    assert np.array_equal(read_adapter(tmp_path / "ours").tensors["base_model.model.lm_head.weight"], head)


def test_bfloat16_adapter_is_widened_exactly(paddle, pnlp, make_paddle_model, tmp_path):
    theirs = paddlenlp_lora(paddle, pnlp, make_paddle_model, dtype="bfloat16")
    theirs.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "lora_config.json").read_text())["dtype"] == "bfloat16"
    state = read_adapter(tmp_path)
    for name, parameter in theirs.model.named_parameters():
        if "lora_" in name:
            expected = parameter.astype("float32").numpy().T
            assert np.array_equal(state.tensors[f"base_model.model.{name}.weight"], expected)


def test_hf_list_targets_select_the_same_layers_in_paddlenlp(paddle, pnlp, make_paddle_model, tmp_path):
    model = peftplug.get_peft_model(
        base(paddle, make_paddle_model), peftplug.LoraConfig(r=4, target_modules=["q_proj", "down_proj"])
    )
    state = model.adapter_state()
    write_adapter(state, tmp_path, "paddlenlp")
    written = json.loads((tmp_path / "lora_config.json").read_text())
    assert written["target_modules"] == ["(?:.*\\.)?q_proj", "(?:.*\\.)?down_proj"]
    loaded = pnlp.LoRAModel.from_pretrained(base(paddle, make_paddle_model), str(tmp_path))
    adapted = sorted(name.rsplit(".", 1)[0] for name in trained_params(loaded.model) if name.endswith("lora_A"))
    assert adapted == sorted(
        key[len("base_model.model.") :].rsplit(".", 2)[0] for key in state.tensors if "lora_A" in key
    )
    assert read_adapter(tmp_path).config.target_modules == ["q_proj", "down_proj"]


# ====================================================================== HF PEFT -> paddlenlp -> HF PEFT
def test_hf_peft_lora_through_paddlenlp_is_bit_identical(torch, make_model, tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        make_model("llama"),
        peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], use_rslora=True, bias="none"),
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)
    model.save_pretrained(tmp_path / "hf")
    state = read_adapter(tmp_path / "hf")
    write_adapter(state, tmp_path / "pd", "paddlenlp")
    back = read_adapter(tmp_path / "pd")
    assert list(back.tensors) == list(state.tensors)
    for key, value in state.tensors.items():
        assert back.tensors[key].dtype == value.dtype and np.array_equal(back.tensors[key], value), key
    for field in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "modules_to_save"):
        assert getattr(back.config, field) == getattr(state.config, field), field
    written = json.loads((tmp_path / "pd/lora_config.json").read_text())
    assert written["rslora"] is True and written["scaling"] == 16 / 2.0


@pytest.mark.parametrize("projection", [False, True])
def test_torch_prefix_state_through_paddlenlp_is_bit_identical(torch, make_model, tmp_path, projection):
    fields = {"prefix_projection": True, "encoder_hidden_size": 20} if projection else {}
    model = peftplug.get_peft_model(
        make_model("llama"), peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, **fields)
    )
    state = model.adapter_state()
    assert bool(state.extra_tensors) == projection
    write_adapter(state, tmp_path, "paddlenlp")
    assert json.loads((tmp_path / "prefix_config.json").read_text())["prefix_projection"] is projection
    back = read_adapter(tmp_path)
    for source, result in ((state.tensors, back.tensors), (state.extra_tensors, back.extra_tensors)):
        assert sorted(result) == sorted(source)
        for key, value in source.items():
            assert result[key].dtype == value.dtype and np.array_equal(result[key], value), key
    for field in ("num_virtual_tokens", "token_dim", "num_attention_heads", "num_layers", "prefix_projection"):
        assert getattr(back.config, field) == getattr(state.config, field), field


def test_prefix_projection_without_encoder_weights_is_written_as_the_table(torch, make_model, tmp_path):
    model = peftplug.get_peft_model(
        make_model("llama"),
        peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, prefix_projection=True),
    )
    full = model.adapter_state()
    state = AdapterState(full.config, full.tensors, {})  # as read from an HF PEFT file
    write_adapter(state, tmp_path, "paddlenlp")
    assert json.loads((tmp_path / "prefix_config.json").read_text())["prefix_projection"] is False
    assert sorted(read_pdparams(tmp_path / "prefix_model_state.pdparams")) == ["0.weight"]
    assert np.array_equal(read_adapter(tmp_path).tensors["prompt_embeddings"], full.tensors["prompt_embeddings"])


@pytest.mark.parametrize("method", ["ia3", "prompt", "ptuning-mlp", "ptuning-lstm"])
def test_torch_states_of_other_methods_through_paddlenlp_are_bit_identical(torch, make_model, tmp_path, method):
    configs = {
        "ia3": peftplug.IA3Config(
            task_type="CAUSAL_LM", target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]
        ),
        "prompt": peftplug.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS),
        "ptuning-mlp": peftplug.PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, encoder_hidden_size=12
        ),
        "ptuning-lstm": peftplug.PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=TOKENS,
            encoder_hidden_size=12,
            encoder_reparameterization_type="LSTM",
        ),
    }
    state = peftplug.get_peft_model(make_model("llama"), configs[method]).adapter_state()
    files = write_adapter(state, tmp_path, "paddlenlp")
    stem = {"ia3": "ia3", "prompt": "prompt_tuning"}.get(method, "p_tuning")
    assert sorted(p.name for p in files) == sorted([f"{stem}_config.json", f"{stem}_model_state.pdparams"])
    raw = read_pdparams(tmp_path / f"{stem}_model_state.pdparams")
    assert not any(key.startswith("base_model.") for key in raw)
    if method == "ia3":  # Paddle layout: [1, out] for an output scale, [in, 1] for a feed-forward input
        assert raw["model.layers.0.self_attn.k_proj.ia3_l"].shape == (1, 16)
        assert raw["model.layers.0.mlp.down_proj.ia3_l"].shape == (64, 1)
    if method == "ptuning-mlp":
        assert raw["prompt_encoder.mlp_head.0.weight"].shape == (32, 12)  # Paddle Linear [in, out]
    back = read_adapter(tmp_path)
    assert back.config.to_dict() == state.config.to_dict()
    for source, result in ((state.tensors, back.tensors), (state.extra_tensors, back.extra_tensors)):
        assert sorted(result) == sorted(source)
        for key, value in source.items():
            assert np.array_equal(result[key], value), key


# ====================================================================== prefix tuning against PaddleNLP
@pytest.mark.parametrize("family, projection", [("llama", False), ("llama", True), ("bloom", False), ("bloom", True)])
def test_paddlenlp_prefix_files_both_ways(paddle, pnlp, make_paddle_model, tmp_path, family, projection):
    theirs, postprocess = paddlenlp_prefix(paddle, pnlp, base(paddle, make_paddle_model, family), family, projection)
    randomise(paddle, theirs.prefix_encoder, scale=0.3)
    theirs.eval()
    theirs.save_pretrained(str(tmp_path / "theirs"))
    state = read_adapter(tmp_path / "theirs")
    config = state.config
    layers, kv_heads = 2, (2 if family == "llama" else 4)
    assert (config.num_virtual_tokens, config.num_layers, config.num_attention_heads) == (TOKENS, layers, kv_heads)
    assert config.token_dim == 8 * kv_heads and config.prefix_projection is projection

    # The canonical table is HF PEFT's: per layer l, column block 2l holds its keys, 2l+1 its values.
    with paddle.no_grad():
        per_layer = theirs._get_past_key_values(1)
    table = state.tensors["prompt_embeddings"].reshape(TOKENS, 2 * layers, kv_heads, 8)
    for layer, (key, value) in enumerate(per_layer):
        # Llama's postprocess gives [B, T, heads, head_dim]; Bloom's the same before its own use.
        np.testing.assert_allclose(table[:, 2 * layer], key.numpy()[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(table[:, 2 * layer + 1], value.numpy()[0], rtol=0, atol=1e-6)
    encoder = {k: v.numpy() for k, v in theirs.prefix_encoder.state_dict().items()}
    if projection:
        extra = state.extra_tensors
        assert np.array_equal(extra["prompt_encoder.embedding.weight"], encoder["0.weight"])
        assert np.array_equal(extra["prompt_encoder.transform.0.weight"], encoder["1.weight"].T)
        assert np.array_equal(extra["prompt_encoder.transform.0.bias"], encoder["1.bias"])
        assert extra["prompt_encoder.transform.2.weight"].shape == encoder["3.weight"].T.shape
    else:
        assert state.extra_tensors == {}

    write_adapter(state, tmp_path / "ours", "paddlenlp")
    assert sorted(os.listdir(tmp_path / "ours")) == [
        "pre_caches.npy",
        "prefix_config.json",
        "prefix_model_state.pdparams",
    ]
    np.testing.assert_allclose(
        np.load(tmp_path / "ours/pre_caches.npy"), np.load(tmp_path / "theirs/pre_caches.npy"), rtol=0, atol=1e-6
    )
    loaded = load_prefix(pnlp, base(paddle, make_paddle_model, family), family, tmp_path / "ours")
    got = {k: v.numpy() for k, v in loaded.prefix_encoder.state_dict().items()}
    assert sorted(got) == sorted(encoder)
    for name in encoder:
        assert np.array_equal(got[name], encoder[name]), name
    ids = ids_batch(paddle)
    ours_logits = logits(paddle, loaded, ids, attention_mask=mask_for(paddle, ids))
    theirs_logits = logits(paddle, theirs, ids, attention_mask=mask_for(paddle, ids))
    plain = logits(paddle, base(paddle, make_paddle_model, family), ids, attention_mask=mask_for(paddle, ids))
    assert np.abs(theirs_logits - plain).max() > 1e-3, "the prefix changes the logits"
    assert np.array_equal(ours_logits, theirs_logits)
    # Read back: the same canonical state, bit for bit.
    again = read_adapter(tmp_path / "ours")
    for source, result in ((state.tensors, again.tensors), (state.extra_tensors, again.extra_tensors)):
        assert all(np.array_equal(result[k], v) for k, v in source.items()) and sorted(result) == sorted(source)


def test_prefix_column_order_sections_to_interleaved_with_three_layers():
    from peftplug.plugins.prefix_tuning.paddlenlp_codec import interleaved_to_sections, sections_to_interleaved

    # PaddleNLP's blocks: k0 k1 k2 v0 v1 v2 (block j holds j); HF PEFT's: k0 v0 k1 v1 k2 v2.
    paddle_order = np.repeat(np.arange(6, dtype="float32"), 2)[None, :].repeat(2, axis=0)
    hf = sections_to_interleaved(paddle_order, 3)
    assert hf[0, ::2].tolist() == [0, 3, 1, 4, 2, 5]
    assert np.array_equal(interleaved_to_sections(hf, 3), paddle_order)


def test_prefix_config_mapping_for_grouped_query_attention():
    from peftplug.plugins.prefix_tuning import paddlenlp_codec as paddlenlp_prefix

    data = {
        "dtype": "float32",
        "hidden_size": 32,
        "multi_query_group_num": 2,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_prefix_tokens": 3,
        "prefix_dropout": 0.0,
        "prefix_projection": True,
        "prefix_projection_hidden_size": 20,
        "tensor_parallel_degree": -1,
    }
    config = paddlenlp_prefix.config_from_paddlenlp(data)
    assert (config.num_virtual_tokens, config.token_dim, config.num_attention_heads, config.num_layers) == (3, 16, 2, 2)
    assert config.encoder_hidden_size == 20 and config.task_type == "CAUSAL_LM"
    written = paddlenlp_prefix.config_to_paddlenlp(config, True, "float32")
    # PaddleNLP derives the same head_dim (8) and key/value heads (2) from this.
    assert (written["hidden_size"], written["num_attention_heads"], written["multi_query_group_num"]) == (16, 2, None)
    with pytest.warns(UserWarning, match="prefix_dropout=0.1"):
        paddlenlp_prefix.config_from_paddlenlp({**data, "prefix_dropout": 0.1})
    with pytest.raises(ConfigError, match="hidden_size"):
        paddlenlp_prefix.config_from_paddlenlp({**data, "hidden_size": None})


# ====================================================================== the safe .pdparams reader
class _Observable:
    """Unpickling this calls os.mkdir(marker): the test sees whether code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("where", ["top", "value", "nested"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, where):
    marker = str(tmp_path / "pwned")
    payload = {
        "top": _Observable(marker),
        "value": {"x.lora_A": _Observable(marker)},
        "nested": {"x.lora_A": np.ones((2, 2), "float32"), "StructuredToParameterName@@": {"x": [_Observable(marker)]}},
    }[where]
    (tmp_path / "lora_model_state.pdparams").write_bytes(pickle.dumps(payload, protocol=4))
    (tmp_path / "lora_config.json").write_text(json.dumps({"r": 2, "target_modules": [".*x"]}))
    with pytest.raises(AdapterLoadError) as error:
        read_adapter(tmp_path)
    message = str(error.value)
    assert "lora_model_state.pdparams" in message and ("posix.mkdir" in message or "os.mkdir" in message)
    assert not os.path.exists(marker), "code from the file ran"
    # The same payload does run under plain pickle: the test can fail.
    pickle.loads(pickle.dumps(_Observable(marker)))
    assert os.path.exists(marker)


def test_truncated_and_corrupted_pdparams_name_the_file(tmp_path):
    good = pdparams_bytes({"a.lora_A": np.ones((4, 2), "float32"), "a.lora_B": np.ones((2, 4), "float32")})
    cases = {
        "truncated": good[: len(good) // 2],
        "corrupted": good[:2] + b"\xff\xfe garbage" + good[12:],
        "empty": b"",
        "not-a-pickle": b"this is text, not a pickle",
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.pdparams"
        path.write_bytes(content)
        with pytest.raises(AdapterLoadError, match=re.escape(str(path))) as error:
            read_pdparams(path)
        assert "truncated or corrupted" in str(error.value), name
    for name, payload in {
        "list": [1, 2],
        "string-value": {"a": "text"},
        "object-array": {"a": np.array([1, None])},
    }.items():
        path = tmp_path / f"{name}.pdparams"
        path.write_bytes(pickle.dumps(payload, protocol=4))
        with pytest.raises(AdapterLoadError, match=re.escape(str(path))):
            read_pdparams(path)


def test_split_big_arrays_and_protocol_2_files_are_read(tmp_path):
    whole = np.arange(12, dtype="float32").reshape(3, 4)
    saved = {
        "w@@.0": whole.ravel()[:5],
        "w@@.1": whole.ravel()[5:],
        "b": np.float32(2.5) * np.ones(2, "float32"),
        "UnpackBigParamInfor@@": {"w": {"OriginShape": (3, 4), "slices": ["w@@.0", "w@@.1"]}},
        "StructuredToParameterName@@": {"w": "linear_0.w_0", "b": "linear_0.b_0"},
    }
    path = tmp_path / "p2.pdparams"
    path.write_bytes(pickle.dumps(saved, protocol=2))
    tensors = read_pdparams(path)
    assert sorted(tensors) == ["b", "w"] and np.array_equal(tensors["w"], whole)


PURE_PADDLE_SCRIPT = """
import contextlib, io, sys, tempfile
import numpy as np
import paddle
import paddlenlp
from paddlenlp import transformers
import peftplug
from peftplug.app.cli import main

paddle.base.core.set_num_threads(1)
config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)

def base():
    paddle.seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.eval()
    return model

def logits(model, ids):
    with paddle.no_grad():
        out = model(input_ids=ids)
    return (out[0] if isinstance(out, (tuple, list)) else out.logits).numpy()

ids = paddle.to_tensor(np.random.default_rng(1).integers(3, 128, size=(2, 7)), dtype="int64")
model = peftplug.get_peft_model(base(), peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]))
for _, parameter in model.named_parameters():
    if not parameter.stop_gradient:
        parameter.set_value(paddle.full(parameter.shape, 0.05, "float32"))
directory = tempfile.mkdtemp()
model.save_pretrained(directory, format="paddlenlp")
reloaded = peftplug.PeftModel.from_pretrained(base(), directory)
difference = np.abs(logits(reloaded, ids) - logits(model, ids)).max()
assert difference <= 1e-6 and np.abs(logits(base(), ids) - logits(model, ids)).max() > 1e-3, difference
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["inspect", directory])
assert code == 0 and "format:          paddlenlp" in out.getvalue(), (code, out.getvalue())
assert "dill" in sys.modules, "paddlenlp no longer imports dill: the test no longer shows the case"
assert "torch" not in sys.modules, sorted(name for name in sys.modules if name.startswith("torch"))
print("ok")
"""


def test_a_pure_paddle_script_rereads_its_own_paddlenlp_save(paddle):
    """With paddlenlp imported (and with it dill, which patches pickle's pure-Python pickler)
    and torch never imported, a LoRA adapter saved in PaddleNLP's format loads back with the
    same logits and ``peftplug inspect`` describes it."""
    pytest.importorskip("paddlenlp")
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {**os.environ, "MKL_DEBUG_CPU_TYPE": "5", **threads}
    done = subprocess.run(
        [sys.executable, "-c", PURE_PADDLE_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


# ====================================================================== config mapping
@pytest.mark.parametrize(
    "paddle_targets",
    [
        [".*q_proj", ".*v_proj"],
        [".*q_proj"],
        [".*(q|v)_proj"],
        ["(?:.*\\.)?q_proj", "(?:.*\\.)?v_proj"],
        ["llama\\.layers\\.0\\.self_attn\\.q_proj", "c[)|]"],
    ],
)
def test_target_modules_round_trip_losslessly_and_select_the_same_names(paddle_targets):
    hf = paddlenlp_targets.targets_from_paddlenlp(paddle_targets)
    assert paddlenlp_targets.targets_to_paddlenlp(hf) == paddle_targets
    from peftplug.targets import matches_target

    names = [
        "llama.layers.0.self_attn.q_proj",
        "llama.layers.1.self_attn.v_proj",
        "llama.layers.0.mlp.xq_proj",
        "q_proj",
        "c)",
        "llama.layers.0.self_attn.k_proj",
    ]
    for name in names:
        expected = any(re.fullmatch(p, name) for p in paddle_targets)
        assert matches_target(name, hf) == expected, (name, hf)


def lora_dir(tmp_path, **fields):
    """A PaddleNLP-style LoRA adapter directory with the given lora_config.json fields."""
    from peftplug.plugins.lora.paddlenlp_codec import PADDLENLP_DEFAULTS

    data = {**PADDLENLP_DEFAULTS, "r": 2, "target_modules": [".*q_proj"], "dtype": "float32", "scaling": 4.0, **fields}
    (tmp_path / "lora_config.json").write_text(json.dumps(data))
    tensors = {
        "m.q_proj.lora_A": np.ones((4, 2), "float32"),
        "m.q_proj.lora_B": np.ones((2, 4), "float32"),
        "m.q_proj.bias": np.zeros(4, "float32"),
    }
    (tmp_path / "lora_model_state.pdparams").write_bytes(pdparams_bytes(tensors))
    return tmp_path


@pytest.mark.parametrize(
    "field, value",
    [
        ("pissa", True),
        ("lora_plus_scale", 4.0),
        ("do_qat", True),
        ("enable_lora_list", [[True, False, True]]),
        ("use_mora", True),
        ("trainable_bias", "some"),
    ],
)
def test_features_peftplug_lacks_are_refused_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=re.escape(f"{field}=")):
        read_adapter(lora_dir(tmp_path, **{field: value}))


def test_harmless_and_mapped_fields(tmp_path):
    state = read_adapter(
        lora_dir(
            tmp_path,
            rslora=True,
            trainable_bias="lora",
            merge_weights=True,
            use_quick_lora=True,
            use_mora=False,
            base_model_name_or_path="some/llama",
        )
    )
    config = state.config
    assert (config.use_rslora, config.bias, config.base_model_name_or_path) == (True, "lora_only", "some/llama")
    assert "base_model.model.m.q_proj.base_layer.bias" in state.tensors
    files = peftplug.manager.get_plugin_manager().formats.get("paddlenlp").write(state)
    written = json.loads(content_bytes(files["lora_config.json"]))
    assert (written["rslora"], written["trainable_bias"], written["trainable_modules"]) == (True, "lora", None)
    assert written["scaling"] == 8 / np.sqrt(2)
    assert "m.q_proj.bias" in pickle.loads(content_bytes(files["lora_model_state.pdparams"]))


def test_sharded_adapter_points_at_merging(tmp_path):
    lora_dir(tmp_path, tensor_parallel_degree=2)
    (tmp_path / "lora_model_state.pdparams").rename(tmp_path / "lora_model_state.tp00.pdparams")
    (tmp_path / "lora_model_state.tp01.pdparams").write_bytes(
        (tmp_path / "lora_model_state.tp00.pdparams").read_bytes()
    )
    assert detect_format(tmp_path).name == "paddlenlp"
    with pytest.raises(AdapterLoadError, match="sharded for tensor parallelism.*tp00.*merge"):
        read_adapter(tmp_path)


def test_what_paddlenlp_cannot_hold_is_refused_on_write(tmp_path):
    tensors = {
        "base_model.model.m.q_proj.lora_A.weight": np.ones((2, 4), "float32"),
        "base_model.model.m.q_proj.lora_B.weight": np.ones((4, 2), "float32"),
    }
    with pytest.raises(ConfigError, match="rank_pattern"):
        write_adapter(
            AdapterState(peftplug.LoraConfig(r=2, target_modules=["q_proj"], rank_pattern={"q_proj": 4}), tensors),
            tmp_path,
            "paddlenlp",
        )
    embedding = {"base_model.model.m.embed.lora_embedding_A": np.ones((2, 4), "float32")}
    with pytest.raises(AdapterLoadError, match="lora_embedding_A"):
        write_adapter(
            AdapterState(peftplug.LoraConfig(r=2, target_modules=["embed"]), embedding), tmp_path, "paddlenlp"
        )
    # exclude_modules cannot be a PaddleNLP regex list: the adapted layers are named exactly.
    write_adapter(
        AdapterState(peftplug.LoraConfig(r=2, target_modules=["q_proj"], exclude_modules=["x"]), tensors),
        tmp_path,
        "paddlenlp",
    )
    assert json.loads((tmp_path / "lora_config.json").read_text())["target_modules"] == ["m\\.q_proj"]
    assert list(tmp_path.glob("*.tmp")) == []


def test_detect_each_layout_and_nothing_else(tmp_path):
    fmt = peftplug.manager.get_plugin_manager().formats.get("paddlenlp")
    for stem in ("lora", "prefix", "ia3", "prompt_tuning", "p_tuning"):
        directory = tmp_path / stem
        directory.mkdir()
        (directory / f"{stem}_config.json").write_text("{}")
        assert not fmt.detect(directory), "a config alone is no adapter"
        (directory / f"{stem}_model_state.pdparams").write_bytes(b"")
        assert fmt.detect(directory)
    safetensors_dir = tmp_path / "pf"
    safetensors_dir.mkdir()
    (safetensors_dir / "lora_config.json").write_text("{}")
    (safetensors_dir / "peft_model.safetensors.index.json").write_text("{}")
    assert fmt.detect(safetensors_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    assert not fmt.detect(empty)


# ====================================================================== paddleformers' safetensors variant
def test_paddleformers_safetensors_variant_reads_like_the_pdparams(paddle, pnlp, make_paddle_model, tmp_path):
    from safetensors.numpy import save_file

    theirs = paddlenlp_lora(paddle, pnlp, make_paddle_model)
    theirs.save_pretrained(str(tmp_path / "pd"))
    tensors = read_pdparams(tmp_path / "pd/lora_model_state.pdparams")
    shards = tmp_path / "pf"
    shards.mkdir()
    names = list(tensors)
    weight_map = {}
    for index, part in enumerate((names[:3], names[3:]), start=1):
        shard = f"peft_model-0000{index}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(shards / shard), metadata={"format": "np"})
        weight_map.update({k: shard for k in part})
    (shards / "peft_model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (shards / "lora_config.json").write_bytes((tmp_path / "pd/lora_config.json").read_bytes())
    expected, got = read_adapter(tmp_path / "pd"), read_adapter(shards)
    assert list(got.tensors) == list(expected.tensors)
    assert all(np.array_equal(got.tensors[k], v) for k, v in expected.tensors.items())
    # PaddleNLP itself loads this layout to the same parameters: the variant is the real one.
    loaded = pnlp.LoRAModel.from_pretrained(base(paddle, make_paddle_model), str(shards))
    assert all(np.array_equal(v, trained_params(theirs.model)[k]) for k, v in trained_params(loaded.model).items())
    (shards / weight_map[names[0]]).write_bytes(b"\x08")
    with pytest.raises(AdapterLoadError, match="peft_model-00001-of-00002"):
        read_adapter(shards)
    # an index naming a shard with a path in it would read a file outside the adapter's folder
    escaped = {
        name: "../pd/lora_model_state.pdparams" if name == names[0] else shard for name, shard in weight_map.items()
    }
    (shards / "peft_model.safetensors.index.json").write_text(json.dumps({"weight_map": escaped}))
    with pytest.raises(AdapterLoadError, match=r"names shards outside its directory: \['\.\./pd/"):
        read_adapter(shards)


# ====================================================================== end to end with peftplug on Paddle
def train(paddle, model, ids, steps=3):
    model.train()
    optimizer = paddle.optimizer.AdamW(
        learning_rate=1e-2, parameters=[p for p in model.parameters() if not p.stop_gradient]
    )
    for _ in range(steps):
        out = model(input_ids=ids, labels=ids, return_dict=True)
        out.loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    model.eval()


def test_peftplug_lora_trained_on_paddle_loads_in_paddlenlp_and_back(paddle, pnlp, make_paddle_model, tmp_path):
    ours = peftplug.get_peft_model(
        base(paddle, make_paddle_model),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    ids = ids_batch(paddle)
    before = logits(paddle, ours, ids)
    train(paddle, ours, ids)
    ours_logits = logits(paddle, ours, ids)
    assert np.abs(ours_logits - before).max() > 1e-4, "training changed the adapter"
    ours.save_pretrained(tmp_path / "ours", format="paddlenlp")
    assert (tmp_path / "ours/lora_model_state.pdparams").is_file()
    theirs = pnlp.LoRAModel.from_pretrained(base(paddle, make_paddle_model), str(tmp_path / "ours"))
    theirs.eval()
    assert np.abs(logits(paddle, theirs, ids) - ours_logits).max() <= 1e-5
    # PaddleNLP's files load in peftplug (format detected) with the same logits.
    theirs.save_pretrained(str(tmp_path / "theirs"))
    reloaded = peftplug.PeftModel.from_pretrained(base(paddle, make_paddle_model), tmp_path / "theirs")
    assert np.abs(logits(paddle, reloaded, ids) - ours_logits).max() <= 1e-5


def test_peftplug_modules_to_save_on_paddle_load_in_paddlenlp(paddle, pnlp, make_paddle_model, tmp_path):
    ours = peftplug.get_peft_model(
        base(paddle, make_paddle_model),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]),
    )
    ids = ids_batch(paddle)
    train(paddle, ours, ids)
    ours.save_pretrained(tmp_path, format="paddlenlp")
    written = json.loads((tmp_path / "lora_config.json").read_text())
    assert written["trainable_modules"] == ["lm_head\\.weight"]
    theirs = pnlp.LoRAModel.from_pretrained(base(paddle, make_paddle_model), str(tmp_path))
    theirs.eval()
    trained_head = ours.adapter_state().tensors["base_model.model.lm_head.weight"]
    assert np.array_equal(theirs.model.lm_head.weight.numpy(), trained_head)
    assert np.abs(logits(paddle, theirs, ids) - logits(paddle, ours, ids)).max() <= 1e-5


@pytest.mark.parametrize("family, projection", [("llama", True), ("bloom", False)])
def test_peftplug_prefix_trained_on_paddle_loads_in_paddlenlp_and_back(
    paddle, pnlp, make_paddle_model, tmp_path, family, projection
):
    fields = {"prefix_projection": True, "encoder_hidden_size": 20} if projection else {}
    ours = peftplug.get_peft_model(
        base(paddle, make_paddle_model, family),
        peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, **fields),
    )
    ids = ids_batch(paddle)
    train(paddle, ours, ids)
    mask = mask_for(paddle, ids)
    ours_logits = logits(paddle, ours, ids, attention_mask=mask)
    ours.save_pretrained(tmp_path / "ours", format="paddlenlp")
    written = json.loads((tmp_path / "ours/prefix_config.json").read_text())
    assert written["prefix_projection"] is projection
    theirs = load_prefix(pnlp, base(paddle, make_paddle_model, family), family, tmp_path / "ours")
    assert np.abs(logits(paddle, theirs, ids, attention_mask=mask) - ours_logits).max() <= 1e-5
    theirs.save_pretrained(str(tmp_path / "theirs"))
    reloaded = peftplug.PeftModel.from_pretrained(base(paddle, make_paddle_model, family), tmp_path / "theirs")
    assert np.abs(logits(paddle, reloaded, ids, attention_mask=mask) - ours_logits).max() <= 1e-5


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt", "ptuning", "prefix"])
def test_paddle_round_trip_in_paddlenlp_format_for_all_methods(paddle, make_paddle_model, tmp_path, method):
    configs = {
        "lora": peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]),
        "ia3": peftplug.IA3Config(
            task_type="CAUSAL_LM", target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]
        ),
        "prompt": peftplug.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS),
        "ptuning": peftplug.PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, encoder_hidden_size=12
        ),
        "prefix": peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, prefix_projection=True),
    }
    ours = peftplug.get_peft_model(base(paddle, make_paddle_model), configs[method])
    ids = ids_batch(paddle)
    train(paddle, ours, ids)
    mask = mask_for(paddle, ids)
    expected = logits(paddle, ours, ids, attention_mask=mask)
    ours.save_pretrained(tmp_path, format="paddlenlp")
    assert detect_format(tmp_path).name == "paddlenlp"
    loaded = peftplug.PeftModel.from_pretrained(base(paddle, make_paddle_model), tmp_path)
    assert np.abs(logits(paddle, loaded, ids, attention_mask=mask) - expected).max() <= 1e-5
    state, back = ours.adapter_state(), read_adapter(tmp_path)
    assert sorted(back.tensors) == sorted(state.tensors)
    assert all(np.array_equal(back.tensors[k], v) for k, v in state.tensors.items())
    if method in ("ptuning", "prefix"):  # the encoder too, so training resumes exactly
        assert sorted(back.extra_tensors) == sorted(state.extra_tensors)
        assert all(np.array_equal(back.extra_tensors[k], v) for k, v in state.extra_tensors.items())
