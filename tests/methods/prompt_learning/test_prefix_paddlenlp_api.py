"""``peftplug.paddlenlp``'s ``PrefixConfig`` / ``PrefixModelForCausalLM`` against PaddleNLP's own:
each test body runs with peftplug's import and with ``paddlenlp.peft``'s (the ``lib`` fixture)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from paddle_lm import ids_batch
from paddlenlp_peft import LIBRARIES, library, prefix_hooks

TOKENS = 3


@pytest.fixture(params=LIBRARIES)
def name(request, paddle):
    return request.param


@pytest.fixture
def ids(paddle):
    return ids_batch(paddle)


def prefix_config(lib, model, projection=False):
    config = model.config
    return lib.PrefixConfig(
        num_prefix_tokens=TOKENS,
        num_attention_heads=config.num_attention_heads,
        multi_query_group_num=config.num_key_value_heads,
        num_hidden_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        prefix_projection=projection,
        prefix_projection_hidden_size=16 if projection else None,
    )


def prefix_llama(name, make_paddle_model, projection=False, **hooks):
    lib = library(name)
    model = make_paddle_model("llama")
    hooks.setdefault("postprocess_past_key_value", prefix_hooks(name).llama_postprocess_past_key_value)
    return lib.PrefixModelForCausalLM(model, prefix_config(lib, model, projection), **hooks)


def run(paddle, model, ids):
    model.eval()
    with paddle.no_grad():
        return model(input_ids=ids, attention_mask=paddle.ones(ids.shape, dtype="int64"))[0].numpy()


def test_a_config_saved_and_loaded_is_equal(name, tmp_path):
    lib = library(name)
    config = lib.PrefixConfig(
        num_prefix_tokens=4, num_attention_heads=4, num_hidden_layers=2, hidden_size=32, prefix_projection=True,
        prefix_projection_hidden_size=8, multi_query_group_num=2,
    )  # fmt: skip
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "prefix_config.json").read_text())["num_prefix_tokens"] == 4
    assert lib.PrefixConfig.from_pretrained(tmp_path) == config
    with pytest.raises(ValueError, match="Can't find prefix_config.json"):
        lib.PrefixConfig.from_pretrained(tmp_path / "nowhere")


def test_config_defaults_are_paddlenlps(paddle):
    from paddlenlp.peft import PrefixConfig as Theirs

    from peftplug.paddlenlp import PrefixConfig as Ours

    assert Ours().to_dict() == Theirs().to_dict()


@pytest.mark.parametrize("projection", [False, True])
def test_only_the_prefix_is_trainable_and_counted_as_paddlenlp_counts(
    name, make_paddle_model, paddle, monkeypatch, projection
):
    from paddlenlp.utils.log import logger

    lines = []
    monkeypatch.setattr(logger, "debug", lambda message, *a, **k: lines.append(message))
    model = prefix_llama(name, make_paddle_model, projection)
    model.mark_only_prefix_as_trainable()
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    assert {id(p) for p in trainable} == {id(p) for p in model.prefix_encoder.parameters()}
    model.print_trainable_parameters()
    count = sum(int(np.prod(p.shape)) for p in trainable)
    total = count + sum(int(np.prod(t.shape)) for t in model.model.state_dict().values())
    assert count == TOKENS * (2 * 2 * 16 if not projection else 16) + (
        0 if not projection else 16 * 16 + 16 + 16 * 64 + 64
    )
    assert lines[-1] == (
        f"Frozen parameters: {total - count:.2e} || Trainable parameters:{count:.2e} || "
        f"Total parameters:{total:.2e}|| Trainable:{count / total:.2%}"
    )


def test_train_and_eval_forward_agree_without_dropout(name, make_paddle_model, ids, paddle):
    model = prefix_llama(name, make_paddle_model, projection=True)
    model.train()
    with paddle.no_grad():
        trained = model(input_ids=ids, attention_mask=paddle.ones(ids.shape, dtype="int64"))[0].numpy()
    np.testing.assert_allclose(run(paddle, model, ids), trained, atol=1e-6, rtol=0)


@pytest.mark.parametrize("projection", [False, True])
def test_save_then_from_pretrained_gives_equal_outputs(name, make_paddle_model, ids, paddle, tmp_path, projection):
    model = prefix_llama(name, make_paddle_model, projection)
    expected = run(paddle, model, ids)
    model.save_pretrained(str(tmp_path))
    names = {path.name for path in tmp_path.iterdir()}
    assert {"prefix_config.json", "prefix_model_state.pdparams", "pre_caches.npy"} <= names
    lib, hooks = library(name), prefix_hooks(name)
    loaded = lib.PrefixModelForCausalLM.from_pretrained(
        make_paddle_model("llama"), str(tmp_path), postprocess_past_key_value=hooks.llama_postprocess_past_key_value
    )
    np.testing.assert_allclose(run(paddle, loaded, ids), expected, atol=1e-6, rtol=0)
    assert lib.PrefixConfig.from_pretrained(tmp_path).to_dict() == model.prefix_config.to_dict()


@pytest.mark.parametrize("projection", [False, True])
def test_files_of_one_load_in_the_other_with_equal_logits_and_generations(
    name, make_paddle_model, ids, paddle, tmp_path, projection
):
    reader = next(other for other in LIBRARIES if other != name)
    model = prefix_llama(name, make_paddle_model, projection)
    expected = run(paddle, model, ids)
    model.save_pretrained(str(tmp_path))
    loaded = library(reader).PrefixModelForCausalLM.from_pretrained(
        make_paddle_model("llama"),
        str(tmp_path),
        postprocess_past_key_value=prefix_hooks(reader).llama_postprocess_past_key_value,
    )
    np.testing.assert_allclose(run(paddle, loaded, ids), expected, atol=1e-6, rtol=0)
    mask = paddle.ones(ids.shape, dtype="int64")
    generated = [
        m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, decode_strategy="greedy_search")[0].numpy()
        for m in (model, loaded)
    ]
    np.testing.assert_array_equal(generated[0], generated[1])


def test_the_hooks_are_called_as_paddlenlp_calls_them(name, make_paddle_model, ids, paddle):
    """The postprocess hook gets the prefix [batch, T, 2L, kv_heads, head_dim] (keys of every layer,
    then values) and returns the cache; the mask hook gets (input shape, T, mask)."""
    llama_hook = prefix_hooks(name).llama_postprocess_past_key_value
    seen = {}

    def postprocess(prefix):
        seen["prefix"] = prefix.shape
        return llama_hook(prefix)

    def pad(shape, tokens, mask):
        seen["pad"] = (list(shape), tokens, mask.shape)
        return paddle.concat([paddle.ones([mask.shape[0], tokens], dtype=mask.dtype), mask], axis=-1)

    plain = prefix_llama(name, make_paddle_model)
    hooked = prefix_llama(name, make_paddle_model, postprocess_past_key_value=postprocess, pad_attention_mask=pad)
    hooked.prefix_encoder.set_state_dict(plain.prefix_encoder.state_dict())
    np.testing.assert_allclose(run(paddle, hooked, ids), run(paddle, plain, ids), atol=1e-6, rtol=0)
    assert list(seen["prefix"]) == [2, TOKENS, 2 * 2, 2, 8]  # batch, T, 2 layers x (k, v), kv heads, head_dim
    assert seen["pad"] == (list(ids.shape), TOKENS, list(ids.shape))


def test_peftplugs_model_is_paddlenlps_for_isinstance(make_paddle_model, paddle):
    import paddlenlp.peft

    from peftplug.paddlenlp import PrefixModelForCausalLM

    model = prefix_llama("peftplug.paddlenlp", make_paddle_model)
    assert isinstance(model, paddlenlp.peft.PrefixModelForCausalLM) and isinstance(model, PrefixModelForCausalLM)


@pytest.mark.parametrize("field, value", [("prefix_dropout", 0.1), ("dtype", "float16"), ("hidden_size", None)])
def test_what_peftplug_does_not_do_is_refused_by_name(make_paddle_model, paddle, field, value):
    from peftplug.paddlenlp import PrefixConfig, PrefixModelForCausalLM

    base = make_paddle_model("llama")
    config = prefix_config(library("peftplug.paddlenlp"), base)
    setattr(config, field, value)
    with pytest.raises(ValueError, match=rf"PrefixConfig\.{field}="):
        PrefixModelForCausalLM(base, config)
    assert isinstance(config, PrefixConfig)
