"""Architecture plugins: HF transformers <-> PaddleNLP module maps, prefix-cache layouts, and
copying base weights between tiny models of both libraries (logits compared)."""

from __future__ import annotations

import numpy as np
import pytest

import peftplug
from peftplug.interop.name_maps import (
    NameMapError,
    architecture_for,
    fused_output_order,
    fused_part_sizes,
    map_name,
    map_name_candidates,
    prefix_block_order,
    side_of,
    to_hf_name,
    to_hf_names,
    to_paddle_name,
    to_paddle_names,
    transposes,
)
from peftplug.interop.weights import WeightCopyError, copy_base_weights
from peftplug.manager import PluginManager
from peftplug.registration import Architecture, ModuleMap

# Measured: HF -> PaddleNLP logits differ by at most 1.2e-7 (float32) for Llama, Bloom and GPT-2.
TOLERANCE = 1e-5
T, S = 3, 7  # prefix length, input length


@pytest.fixture(scope="module")
def paddle():
    pytest.importorskip("paddlenlp")
    import paddle

    return paddle


@pytest.fixture
def manager():
    return PluginManager(load_entry_points=False)


# ---------------------------------------------------------------- tiny models, both libraries
LLAMA = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


def hf_model(torch, family: str, **overrides):
    """A tiny transformers model, eval mode, dropout off. Bloom and GPT-2 are tied: PaddleNLP's
    Bloom and GPT always tie their output layer to the word embeddings."""
    import transformers

    torch.manual_seed(0)
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, **overrides}))
    elif family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**LLAMA, **overrides}))
    elif family == "bloom":
        config = dict(
            vocab_size=128,
            hidden_size=32,
            n_layer=2,
            n_head=4,
            tie_word_embeddings=True,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
        model = transformers.BloomForCausalLM(transformers.BloomConfig(**{**config, **overrides}))
    elif family == "gpt2":
        config = dict(
            vocab_size=128,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            tie_word_embeddings=True,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**config, **overrides}))
    else:
        raise ValueError(family)
    return model.eval()


def paddle_model(paddle, family: str, **overrides):
    """The PaddleNLP model of ``family`` with the same config values, eval mode, dropout off."""
    import paddlenlp.transformers as pt

    paddle.seed(1)
    if family == "llama":
        model = pt.LlamaForCausalLM(pt.LlamaConfig(**{**LLAMA, **overrides}))
    elif family == "bloom":
        config = dict(
            vocab_size=128,
            hidden_size=32,
            n_layer=2,
            n_head=4,
            tie_word_embeddings=True,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
        model = pt.BloomForCausalLM(pt.BloomConfig(**{**config, **overrides}))
    elif family == "gpt2":
        config = dict(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        model = pt.GPTForCausalLM(pt.GPTConfig(**{**config, **overrides}))
    else:
        raise ValueError(family)
    model.eval()
    return model


IDS = np.random.RandomState(1).randint(3, 128, (2, S))


def hf_logits(torch, model, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS), **kwargs).logits.numpy()


def paddle_logits(paddle, model, **kwargs) -> np.ndarray:
    with paddle.no_grad():
        out = model(input_ids=paddle.to_tensor(IDS), **kwargs)
    return (out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)).numpy()


def state(model) -> dict[str, np.ndarray]:
    return {
        k: (v.detach().numpy() if hasattr(v, "detach") else v.numpy()).copy() for k, v in model.state_dict().items()
    }


PADDLE_FAMILIES = ["llama", "bloom", "gpt2"]


# ---------------------------------------------------------------- copying base weights
@pytest.mark.parametrize("family", PADDLE_FAMILIES)
def test_hf_to_paddle_gives_the_same_logits(torch, paddle, family):
    source, target = hf_model(torch, family), paddle_model(paddle, family)
    assert np.abs(hf_logits(torch, source) - paddle_logits(paddle, target)).max() > 1e-2  # differ before
    origins = copy_base_weights(source, target)
    assert set(origins) == set(target.state_dict())
    difference = np.abs(hf_logits(torch, source) - paddle_logits(paddle, target)).max()
    assert difference <= TOLERANCE, f"{family}: logits differ by {difference}"


@pytest.mark.parametrize("family", PADDLE_FAMILIES)
def test_paddle_to_hf_gives_the_same_logits(torch, paddle, family):
    source, target = paddle_model(paddle, family), hf_model(torch, family)
    copy_base_weights(source, target)
    difference = np.abs(hf_logits(torch, target) - paddle_logits(paddle, source)).max()
    assert difference <= TOLERANCE, f"{family}: logits differ by {difference}"


@pytest.mark.parametrize("family", PADDLE_FAMILIES)
def test_a_round_trip_through_paddle_is_bit_identical(torch, paddle, family):
    source, middle, back = hf_model(torch, family), paddle_model(paddle, family), hf_model(torch, family)
    torch.nn.init.normal_(back.lm_head.weight)  # make sure the copy, not the seed, sets it
    copy_base_weights(source, middle)
    copy_base_weights(middle, back)
    before, after = state(source), state(back)
    assert before.keys() == after.keys()
    for name in before:
        assert np.array_equal(before[name], after[name]), name


def test_gpt2_fused_c_attn_is_split_into_q_k_v(torch, paddle):
    source, target = hf_model(torch, "gpt2"), paddle_model(paddle, "gpt2")
    origins = copy_base_weights(source, target)
    assert origins["gpt.decoder.layers.1.self_attn.k_proj.weight"] == ("transformer.h.1.attn.c_attn.weight",)
    c_attn = source.transformer.h[1].attn.c_attn.weight.detach().numpy()  # Conv1D: [in, 3 * out]
    np.testing.assert_array_equal(target.gpt.decoder.layers[1].self_attn.k_proj.weight.numpy(), c_attn[:, 32:64])
    back = hf_model(torch, "gpt2")
    torch.nn.init.zeros_(back.transformer.h[1].attn.c_attn.weight)
    assert copy_base_weights(target, back)["transformer.h.1.attn.c_attn.weight"] == tuple(
        f"gpt.decoder.layers.1.self_attn.{p}_proj.weight" for p in "qkv"
    )
    np.testing.assert_array_equal(back.transformer.h[1].attn.c_attn.weight.detach().numpy(), c_attn)


def test_a_shape_mismatch_names_the_parameter_and_both_shapes_and_writes_nothing(torch, paddle):
    source, target = hf_model(torch, "llama"), paddle_model(paddle, "llama", intermediate_size=48)
    before = state(target)
    with pytest.raises(
        WeightCopyError,
        match=r"llama\.layers\.0\.mlp\.gate_proj\.weight is \[32, 48\] in the target "
        r"but model\.layers\.0\.mlp\.gate_proj\.weight \[64, 32\] gives \[32, 64\]",
    ):
        copy_base_weights(source, target)
    after = state(target)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_parameters_left_unmatched_are_named_on_either_side(torch, paddle):
    with pytest.raises(
        WeightCopyError,
        match=r"source parameter is absent: llama\.layers\.2\.self_attn\.q_proj\.weight "
        r"\(from model\.layers\.2\.self_attn\.q_proj\.weight\)",
    ):
        copy_base_weights(hf_model(torch, "llama"), paddle_model(paddle, "llama", num_hidden_layers=3))
    with pytest.raises(WeightCopyError, match=r"source parameters no target parameter takes: model\.layers\.2\."):
        copy_base_weights(hf_model(torch, "llama", num_hidden_layers=3), paddle_model(paddle, "llama"))
    fused = paddle_model(paddle, "gpt2", fuse_attention_qkv=True)  # per-head q/k/v: no map for it
    with pytest.raises(
        WeightCopyError, match=r"no 'gpt2' module map: gpt\.decoder\.layers\.0\.self_attn\.qkv_proj\.weight"
    ):
        copy_base_weights(hf_model(torch, "gpt2"), fused)


def test_paddlenlp_llama_with_fused_qkv_and_ffn(torch, paddle):
    """fuse_attention_qkv (q/k/v per key/value group, GQA) and fuse_attention_ffn ([gate | up])."""
    source = hf_model(torch, "llama")
    target = paddle_model(paddle, "llama", fuse_attention_qkv=True, fuse_attention_ffn=True)
    origins = copy_base_weights(source, target)
    assert origins["llama.layers.0.self_attn.qkv_proj.weight"] == tuple(
        f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv"
    )
    difference = np.abs(hf_logits(torch, source) - paddle_logits(paddle, target)).max()
    assert difference <= TOLERANCE, f"logits differ by {difference}"
    back = hf_model(torch, "llama")
    torch.nn.init.zeros_(back.model.layers[1].self_attn.k_proj.weight)
    assert copy_base_weights(target, back)["model.layers.1.self_attn.k_proj.weight"] == (
        "llama.layers.1.self_attn.qkv_proj.weight",
    )
    before, after = state(source), state(back)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_an_untied_head_cannot_go_into_a_tied_target(torch, paddle):
    with pytest.raises(WeightCopyError, match=r"ties 'lm_head\.weight' to 'gpt\.embeddings\.word_embeddings\.weight'"):
        copy_base_weights(hf_model(torch, "gpt2", tie_word_embeddings=False), paddle_model(paddle, "gpt2"))


def test_wrong_models_and_families_are_clear_errors(torch, paddle):
    with pytest.raises(WeightCopyError, match="both models are transformers"):
        copy_base_weights(hf_model(torch, "llama"), hf_model(torch, "llama"))
    with pytest.raises(peftplug.errors.BackendError, match="the target is a builtins.dict"):
        copy_base_weights(hf_model(torch, "llama"), {})
    with pytest.raises(NameMapError, match="unknown architecture 'lama'; known: .*llama.*Did you mean 'llama'"):
        copy_base_weights(hf_model(torch, "llama"), paddle_model(paddle, "llama"), architecture="lama")
    with pytest.raises(WeightCopyError, match=r"no 'bloom' module map: llama\.embed_tokens\.weight"):
        copy_base_weights(hf_model(torch, "llama"), paddle_model(paddle, "llama"), architecture="bloom")


# ---------------------------------------------------------------- name maps
def _names(torch, paddle, family):
    names = {"hf": list(hf_model(torch, family).state_dict())}
    if family != "qwen2":
        names["paddle"] = list(paddle_model(paddle, family).state_dict())
    return names


@pytest.mark.parametrize("family", ["llama", "qwen2", "bloom", "gpt2"])
def test_every_parameter_name_round_trips(torch, paddle, family, manager):
    architecture = manager.architectures.get(family)
    names = _names(torch, paddle, family)
    for hf_name in names["hf"]:
        for paddle_name in to_paddle_names(hf_name, architecture):
            assert to_hf_name(paddle_name, architecture) == hf_name
    for paddle_name in names.get("paddle", []):
        hf_name = to_hf_name(paddle_name, architecture)
        assert paddle_name in to_paddle_names(hf_name, architecture)
    if "paddle" in names:  # the map covers both models exactly
        mapped = {p for n in names["hf"] for p in to_paddle_names(n, architecture)}
        assert mapped == set(names["paddle"])
    if family == "qwen2":  # HF Llama and Qwen2 share their module names
        with pytest.raises(NameMapError, match="fit several architectures: llama"):
            architecture_for(names=names["hf"], manager=manager)
    else:
        assert architecture_for(names=names["paddle"], manager=manager) is architecture


def test_qwen2_maps_to_paddlenlp_3_names(torch, paddle, manager):
    """paddlenlp 2.8.1 has no Qwen2; PaddleNLP 3's Qwen2PretrainedModel._get_name_mappings says:
    ``model.X`` <-> ``qwen2.X``, Linear weights and an untied lm_head transposed, biases kept."""
    qwen2 = manager.architectures.get("qwen2")
    linear = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj")
    names = list(hf_model(torch, "qwen2").state_dict())
    assert "model.layers.0.self_attn.q_proj.bias" in names
    for name in names:
        expected = "qwen2." + name[len("model.") :] if name.startswith("model.") else name
        assert to_paddle_name(name, qwen2) == expected
        assert transposes(name, qwen2) == (name == "lm_head.weight" or any(f".{m}.weight" in name for m in linear))


def test_what_transposes(manager):
    llama, bloom, gpt2 = (manager.architectures.get(f) for f in ("llama", "bloom", "gpt2"))
    assert transposes("model.layers.0.self_attn.q_proj.weight", llama)
    assert transposes("lm_head.weight", llama)  # PaddleNLP's LlamaLMHead is [hidden, vocab]
    assert not transposes("model.embed_tokens.weight", llama)
    assert transposes("bloom.h.1.self_attention.query_key_value.weight", bloom, side="paddle")
    assert not transposes("bloom.h.1.self_attention.query_key_value.bias", bloom, side="paddle")
    assert not transposes("lm_head.weight", bloom)  # decoder_weight is [vocab, hidden]
    assert not transposes("transformer.h.0.attn.c_attn.weight", gpt2)  # Conv1D is [in, out] already
    assert to_paddle_name("lm_head.weight", bloom) == "lm_head.decoder_weight"
    match = map_name("gpt.decoder.layers.4.self_attn.v_proj.lora_A", gpt2, "hf")
    assert (match.names, match.part, match.param) == (("transformer.h.4.attn.c_attn.lora_A",), (2, 3), "lora_A")
    with pytest.raises(NameMapError, match=r"one fused module in HF and 3 in PaddleNLP"):
        to_paddle_name("transformer.h.0.attn.c_attn", gpt2)


def test_fused_names_and_layouts(manager):
    llama = manager.architectures.get("llama")
    assert to_hf_names("llama.layers.2.self_attn.qkv_proj.weight", llama) == tuple(
        f"model.layers.2.self_attn.{p}_proj.weight" for p in "qkv"
    )
    with pytest.raises(NameMapError, match=r"one fused module in PaddleNLP and 2 in HF"):
        to_hf_name("llama.layers.0.mlp.gate_up_fused_proj", llama)
    readings = map_name_candidates("model.layers.2.self_attn.k_proj.lora_A.weight", llama, "paddle")
    assert [(r.names, r.part) for r in readings] == [
        (("llama.layers.2.self_attn.k_proj.lora_A.weight",), None),
        (("llama.layers.2.self_attn.qkv_proj.lora_A.weight",), (1, 3)),
    ]
    assert to_paddle_name("model.layers.2.self_attn.k_proj", llama) == "llama.layers.2.self_attn.k_proj"
    # GQA: 4 query heads, 2 key/value heads, head_dim 1 -> [q0 q1 k0 v0 | q2 q3 k1 v1]
    assert fused_output_order("kv_groups", [4, 2, 2], kv_heads=2) == [0, 1, 4, 6, 2, 3, 5, 7]
    assert fused_part_sizes("kv_groups", 8, 3, heads=4, kv_heads=2) == [4, 2, 2]
    assert fused_part_sizes("concat", 6, 3) == [2, 2, 2]
    with pytest.raises(ValueError, match=r"fused q/k/v axis 9 is not \(heads 4 \+ 2 \* kv_heads 2\) \* head_dim"):
        fused_part_sizes("kv_groups", 9, 3, heads=4, kv_heads=2)


def test_adapter_keys_map_and_tell_the_family(manager):
    llama = manager.architectures.get("llama")
    assert (
        to_paddle_name("model.layers.3.mlp.down_proj.lora_B.weight", llama)
        == "llama.layers.3.mlp.down_proj.lora_B.weight"
    )
    assert architecture_for(names=["bloom.h.0.self_attention.query_key_value.lora_A"], manager=manager).name == "bloom"
    assert side_of(["llama.layers.0.self_attn.q_proj.lora_A"], llama) == "paddle"
    with pytest.raises(
        NameMapError, match=r"fit several architectures: llama \(hf names\), qwen2 \(hf names\); pass architecture="
    ):
        architecture_for(names=["model.layers.0.self_attn.q_proj.lora_A.weight"], manager=manager)
    with pytest.raises(
        NameMapError,
        match=r"PaddleNLP name 'llama.layers.0.attn.c_attn' matches no module of "
        r"architecture 'llama' \(PaddleNLP modules: llama.embed_tokens, ",
    ):
        to_hf_name("llama.layers.0.attn.c_attn", llama)


def test_unknown_family_lists_the_known_ones(manager):
    with pytest.raises(
        NameMapError, match=r"no registered architecture answers to model_type 'mamba'; known: .*bloom.*gpt2.*llama"
    ):
        architecture_for(model_type="mamba", manager=manager)
    with pytest.raises(
        NameMapError,
        match=r"maps all 1 names \(e\.g\. 'backbone\.x'\); families with HF <-> PaddleNLP "
        r"module maps: bloom, gpt2, llama, qwen2",
    ):
        architecture_for(names=["backbone.x"], manager=manager)
    with pytest.raises(NameMapError, match=r"'mistral' has no HF <-> PaddleNLP module map"):
        to_paddle_name("model.layers.0.self_attn.q_proj", manager.architectures.get("mistral"))
    assert architecture_for(model_type="gpt", manager=manager).name == "gpt2"  # PaddleNLP's model_type


def test_paddle_default_targets_are_recorded(manager):
    llama, bloom = manager.architectures.get("llama"), manager.architectures.get("bloom")
    assert llama.convention_default_targets["paddle"]["lora"][:2] == (".*q_proj.*", ".*v_proj.*")
    assert bloom.convention_default_targets["paddle"]["lora"][0] == ".*query_key_value.*"
    assert manager.architectures.get("llama").default_targets["lora"] == ("q_proj", "v_proj")


# ---------------------------------------------------------------- prefix-tuning caches
def test_prefix_block_order():
    assert prefix_block_order(3, "interleaved", "sections") == [0, 2, 4, 1, 3, 5]
    assert prefix_block_order(3, "sections", "interleaved") == [0, 3, 1, 4, 2, 5]
    assert prefix_block_order(2, "sections", "sections") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="'interleaved' or 'sections', got 'pairs'"):
        prefix_block_order(2, "pairs", "sections")


@pytest.mark.parametrize("family", ["llama", "bloom"])
def test_prefix_cache_order_matches_peft_and_paddlenlp(torch, paddle, family, manager):
    """peft's cache from an encoder output, and PaddleNLP's postprocess of the same output
    reordered with prefix_block_order, hold the same keys and values layer by layer."""
    import paddlenlp.peft.prefix as paddle_prefix
    import peft

    layout = manager.architectures.get(family).prefix_cache
    model = peft.get_peft_model(
        hf_model(torch, family), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=T)
    )
    table = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        table.copy_(torch.randn(table.shape))
    cache = model.get_prompt(batch_size=1)
    layers = 2
    blocks = (
        table.detach()
        .numpy()
        .reshape(T, 2 * layers, -1)[:, prefix_block_order(layers, layout.of("hf").order, layout.of("paddle").order)]
    )
    heads = cache.layers[0].keys.shape[1]
    postprocess = getattr(paddle_prefix, layout.of("paddle").postprocess)
    pairs = postprocess(paddle.to_tensor(blocks.reshape(1, T, 2 * layers, heads, -1)))
    for layer, (key, value) in enumerate(pairs):
        hf_key, hf_value = (t.detach().numpy() for t in (cache.layers[layer].keys, cache.layers[layer].values))
        np.testing.assert_array_equal(key.numpy().transpose(0, 2, 1, 3), hf_key)  # Paddle: [B, T, heads, head_dim]
        np.testing.assert_array_equal(value.numpy().transpose(0, 2, 1, 3), hf_value)


def _positions(torch, kind):
    if kind == "alibi":
        return None
    start = T if kind == "offset" else 0
    return torch.arange(start, start + S).expand(IDS.shape[0], S)


@pytest.mark.parametrize("family", PADDLE_FAMILIES)
def test_prefix_position_ids_are_as_recorded(torch, paddle, family, manager):
    """The same past keys/values on both sides: each library's default position ids are what
    the family's PrefixCacheLayout says, so HF given PaddleNLP's convention equals PaddleNLP."""
    from transformers import DynamicCache

    layout = manager.architectures.get(family).prefix_cache
    hf, pd = hf_model(torch, family), paddle_model(paddle, family)
    copy_base_weights(hf, pd)
    heads = 2 if family == "llama" else 4
    past = np.random.RandomState(2).randn(2, 2, IDS.shape[0], heads, T, 8).astype("float32")  # layer, k/v, B, H, T, hd

    def hf_run(positions):
        cache = DynamicCache()
        for layer in range(2):
            cache.update(torch.tensor(past[layer, 0]), torch.tensor(past[layer, 1]), layer)
        kwargs = {} if positions is None else {"position_ids": positions}
        return hf_logits(torch, hf, past_key_values=cache, attention_mask=torch.ones(IDS.shape[0], T + S), **kwargs)

    paddle_past = tuple(
        tuple(paddle.to_tensor(past[layer, kv].transpose(0, 2, 1, 3)) for kv in range(2)) for layer in range(2)
    )
    cache_argument = "cache" if family == "bloom" else "past_key_values"
    paddle_out = paddle_logits(
        paddle, pd, **{cache_argument: paddle_past}, attention_mask=paddle.ones([IDS.shape[0], T + S], dtype="int64")
    )
    hf_default = hf_run(None)
    hf_positions, paddle_positions = layout.of("hf").positions, layout.of("paddle").positions
    np.testing.assert_allclose(hf_run(_positions(torch, hf_positions)), hf_default, atol=TOLERANCE)
    np.testing.assert_allclose(hf_run(_positions(torch, paddle_positions)), paddle_out, atol=TOLERANCE)
    if hf_positions != paddle_positions:
        assert np.abs(hf_default - paddle_out).max() > 1e-3  # the difference a converter must bridge


# ---------------------------------------------------------------- a family from a third party
class TinyFamily:
    """A third-party plugin: HF ``body.N`` (Linear) is PaddleNLP ``tiny.N``."""

    architecture = Architecture(
        "tinyfam",
        ("tinyfam",),
        {"lora": ("body",)},
        convention_model_types={"paddle": ("tinyfam_pd",)},
        modules=(ModuleMap({"hf": "body.{n}", "paddle": "tiny.{n}"}, "linear"),),
    )

    @peftplug.hookimpl
    def peftplug_register_architectures(self):
        return self.architecture


def test_a_third_party_family_plugs_in(torch, paddle, manager):
    manager.register(TinyFamily(), "tiny-family")
    assert manager.architectures.owner("tinyfam") == "tiny-family"
    family = architecture_for(model_type="tinyfam_pd", manager=manager)
    assert family is TinyFamily.architecture
    assert architecture_for(names=["tiny.0.weight", "tiny.1.bias"], manager=manager) is family
    assert to_paddle_name("body.1.weight", family) == "tiny.1.weight" and transposes("body.1.weight", family)

    torch.manual_seed(0)
    source = torch.nn.Sequential()
    source.body = torch.nn.ModuleList([torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)])
    target = paddle.nn.Layer()
    target.tiny = paddle.nn.LayerList([paddle.nn.Linear(4, 6), paddle.nn.Linear(6, 3)])
    copy_base_weights(source, target, "tinyfam", manager=manager)
    x = np.random.RandomState(0).randn(5, 4).astype("float32")
    expected = source.body[1](source.body[0](torch.tensor(x))).detach().numpy()
    got = target.tiny[1](target.tiny[0](paddle.to_tensor(x))).numpy()
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    with pytest.raises(NameMapError, match="unknown architecture 'tinyfam'"):
        architecture_for("tinyfam")  # the process-wide manager does not have it
