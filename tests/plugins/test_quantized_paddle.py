"""LoRA on PaddleNLP's weight-only quantized linears (plugins/paddlenlp_quantization): the layers
and trainable parameters PaddleNLP's ``QuantizationLoRALinear`` has (compared with it directly
where paddleslim, which it imports, is installed), files PaddleNLP's ``LoRAModel`` reads and
writes, and a forward that runs where Paddle has the kernel (its CPU build has none: skipped,
naming it)."""

from __future__ import annotations

import numpy as np
import pytest

import peftplug
from peftplug.errors import PeftplugError

paddle = pytest.importorskip("paddle")
pnlp = pytest.importorskip("paddlenlp.peft")

TARGETS = ["q_proj", "v_proj", "down_proj"]
PADDLENLP_TARGETS = [f".*{target}" for target in TARGETS]  # PaddleNLP full-matches regexes
ALGORITHMS = ["weight_only_int8", "weight_only_int4"]


def float_llama():
    """A tiny PaddleNLP Llama (hidden 64, 2 layers), seed 0."""
    from paddlenlp import transformers

    paddle.seed(0)
    return transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
        )
    )


def quantized_llama(algorithm: str):
    """The tiny Llama with its decoder linears made PaddleNLP's ``QuantizationLinear`` (PaddleNLP's
    own replacement; the quantized values are left as built, since Paddle's CPU build cannot
    quantize)."""
    from paddlenlp.quantization.quantization_config import QuantizationConfig
    from paddlenlp.quantization.quantization_utils import replace_with_quantization_linear

    model = float_llama()
    replace_with_quantization_linear(model.llama, QuantizationConfig(weight_quantize_algo=algorithm))
    return model


def adapter_tensors(model) -> dict[str, np.ndarray]:
    """``lora_A`` / ``lora_B`` of a model by module path (PaddleNLP's and peftplug's alike)."""
    tensors = {}
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            module, kind = name.replace(".default", "").rsplit(".", 1)
            tensors[f"{module.split('llama.', 1)[1]}.{kind}"] = parameter.numpy()
    return tensors


def randomized(model):
    """Every LoRA parameter random, so the files carry something to compare."""
    generator = np.random.default_rng(3)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.set_value(generator.normal(size=parameter.shape).astype("float32"))
    return model


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lora_wraps_every_targeted_quantization_linear(algorithm):
    model = peftplug.get_peft_model(quantized_llama(algorithm), peftplug.LoraConfig(r=4, target_modules=TARGETS))
    wrapped = {name: layer for name, layer in model.named_sublayers() if type(layer).__name__ == "QuantizedLoraLinear"}
    assert len(wrapped) == 2 * len(TARGETS)
    for layer in wrapped.values():
        assert type(layer.base_layer).__name__ == "QuantizationLinear"
        assert layer.lora_A["default"].shape == [layer.base_layer.in_features, 4]
        assert layer.lora_B["default"].shape == [4, layer.base_layer.out_features]
    expected = sum(4 * (layer.in_features + layer.out_features) for layer in wrapped.values())
    assert model.get_nb_trainable_parameters()[0] == expected


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_same_parameters_as_paddlenlps_quantization_lora_linear(algorithm):
    pytest.importorskip("paddleslim", reason="PaddleNLP's QuantizationLoRALinear imports paddleslim")
    ours = peftplug.get_peft_model(quantized_llama(algorithm), peftplug.LoraConfig(r=4, target_modules=TARGETS))
    theirs = pnlp.LoRAModel(quantized_llama(algorithm), pnlp.LoRAConfig(r=4, target_modules=PADDLENLP_TARGETS))
    theirs.mark_only_lora_as_trainable()
    assert type(theirs.model.llama.layers[0].self_attn.q_proj).__name__ == "QuantizationLoRALinear"
    ours_shapes = {name: value.shape for name, value in adapter_tensors(ours).items()}
    assert ours_shapes == {name: value.shape for name, value in adapter_tensors(theirs.model).items()}
    trainable = sum(p.size for p in theirs.model.parameters() if not p.stop_gradient)
    assert ours.get_nb_trainable_parameters()[0] == trainable


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_files_move_between_a_quantized_base_and_paddlenlp(algorithm, tmp_path):
    """Trained on the quantized base, saved in PaddleNLP's layout, read by PaddleNLP's LoRAModel
    (on the float base: PaddleNLP's quantized LoRA needs paddleslim); PaddleNLP's file read onto
    the quantized base; HF PEFT's layout round-trips."""
    ours = randomized(
        peftplug.get_peft_model(quantized_llama(algorithm), peftplug.LoraConfig(r=4, target_modules=TARGETS))
    )
    ours.save_pretrained(tmp_path / "ours", format="paddlenlp")
    in_paddlenlp = pnlp.LoRAModel.from_pretrained(float_llama(), str(tmp_path / "ours"))
    expected = adapter_tensors(ours)
    got = adapter_tensors(in_paddlenlp.model)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)

    theirs = pnlp.LoRAModel(float_llama(), pnlp.LoRAConfig(r=4, lora_alpha=8, target_modules=PADDLENLP_TARGETS))
    randomized(theirs.model)
    assert adapter_tensors(theirs.model), "PaddleNLP adapted the targets"
    theirs.save_pretrained(str(tmp_path / "theirs"))
    in_ours = peftplug.PeftModel.from_pretrained(quantized_llama(algorithm), tmp_path / "theirs")
    loaded = adapter_tensors(in_ours)
    for name, value in adapter_tensors(theirs.model).items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    ours.save_pretrained(tmp_path / "peft")
    again = adapter_tensors(peftplug.PeftModel.from_pretrained(quantized_llama(algorithm), tmp_path / "peft"))
    for name, value in expected.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


def test_dora_and_merging_are_refused_naming_the_layer():
    with pytest.raises(PeftplugError, match=r"DoRA .* QuantizationLinear \(weight_only_int8\)"):
        peftplug.get_peft_model(
            quantized_llama("weight_only_int8"), peftplug.LoraConfig(target_modules=TARGETS, use_dora=True)
        )
    model = peftplug.get_peft_model(quantized_llama("weight_only_int8"), peftplug.LoraConfig(target_modules=TARGETS))
    with pytest.raises(PeftplugError, match=r"cannot merge LoRA adapter 'default' into a PaddleNLP QuantizationLinear"):
        model.merge_and_unload()


def test_forward_adds_the_adapter_to_the_quantized_output():
    """Where Paddle has ``weight_only_linear`` (its GPU build), the adapted output is the base
    layer's plus ``s * x A B``; its CPU build has no such kernel, and the test says so."""
    model = randomized(
        peftplug.get_peft_model(quantized_llama("weight_only_int8"), peftplug.LoraConfig(r=4, target_modules=TARGETS))
    )
    layer = model.base_model.model.llama.layers[0].self_attn.q_proj
    x = paddle.randn([2, 64])
    try:
        base = layer.base_layer(x)
    except RuntimeError as error:
        if "weight_only_linear" in str(error) and "not registered" in str(error):
            pytest.skip("Paddle's weight_only_linear kernel is not registered on this device (CPU): needs a GPU")
        raise
    expected = base + (x @ layer.lora_A["default"] @ layer.lora_B["default"]) * layer.scaling["default"]
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), rtol=0, atol=1e-5)
