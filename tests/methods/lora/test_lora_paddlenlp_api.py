"""``peftplug.paddlenlp``'s ``LoRAConfig`` / ``LoRAModel`` against PaddleNLP's own: each test body
runs with ``from peftplug.paddlenlp import ...`` and with ``from paddlenlp.peft import ...``
(the ``lib`` fixture), so passing both shows the two behave alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
from paddle_lm import ids_batch, logits
from paddlenlp_peft import LIBRARIES, fill_trainable, library, trainable_names

TARGETS = [".*q_proj", ".*v_proj"]


@pytest.fixture(params=LIBRARIES)
def lib(request, paddle):
    return library(request.param)


@pytest.fixture
def ids(paddle):
    return ids_batch(paddle)


def lora_llama(lib, make_paddle_model, **fields):
    config = lib.LoRAConfig(r=4, lora_alpha=8, target_modules=TARGETS, **fields)
    return lib.LoRAModel(make_paddle_model("llama"), config)


def test_a_config_saved_and_loaded_is_equal(lib, tmp_path):
    config = lib.LoRAConfig(
        r=4,
        lora_alpha=16,
        target_modules=[".*q_proj"],
        trainable_modules=[".*norm.weight"],
        lora_dropout=0.1,
        trainable_bias="lora",
        rslora=True,
        base_model_name_or_path="tiny",
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "lora_config.json").read_text())
    assert saved["scaling"] == 16 / 2 and saved["r"] == 4 and saved["dtype"] is None
    assert lib.LoRAConfig.from_pretrained(tmp_path) == config
    with pytest.raises(ValueError, match="Can't find lora_config.json"):
        lib.LoRAConfig.from_pretrained(tmp_path / "nowhere")


def test_config_defaults_are_paddlenlps(paddle):
    from paddlenlp.peft import LoRAConfig as Theirs

    from peftplug.paddlenlp import LoRAConfig as Ours

    assert Ours().to_dict() == Theirs().to_dict()
    assert Ours(r=16, lora_alpha=32, rslora=True).scaling == Theirs(r=16, lora_alpha=32, rslora=True).scaling


def test_restore_original_model_gives_the_original_class_and_outputs(lib, make_paddle_model, ids, paddle):
    base = make_paddle_model("llama")
    expected = logits(paddle, base, ids)
    model = lib.LoRAModel(base, lib.LoRAConfig(r=4, target_modules=TARGETS))
    fill_trainable(paddle, model)
    assert np.abs(logits(paddle, model, ids) - expected).max() > 1e-3, "the LoRA changes the outputs"
    restored = model.restore_original_model()
    assert type(restored) is type(make_paddle_model("llama"))
    assert type(restored.llama.layers[0].self_attn.q_proj) is paddle.nn.Linear
    np.testing.assert_allclose(logits(paddle, restored, ids), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("trainable_bias", [None, "lora", "all"])
def test_trainable_bias_freezes_what_paddlenlp_freezes(lib, make_paddle_model, paddle, trainable_bias):
    """Bloom has biases in and outside its LoRA layers: None trains the LoRA matrices only,
    "lora" adds the LoRA layers' biases, "all" every bias; trainable_modules adds its matches."""
    base = make_paddle_model("bloom")
    names = list(base.state_dict())
    model = lib.LoRAModel(
        base,
        lib.LoRAConfig(
            r=4,
            target_modules=[".*query_key_value"],
            trainable_bias=trainable_bias,
            trainable_modules=[r"bloom\.ln_f\.weight"],
        ),
    )
    qkv = [n.rsplit(".", 1)[0] for n in names if n.endswith("query_key_value.weight")]
    expected = {f"{m}.lora_{x}" for m in qkv for x in "AB"} | {"bloom.ln_f.weight"}
    if trainable_bias == "lora":
        expected |= {f"{m}.bias" for m in qkv}
    if trainable_bias == "all":
        expected |= {n for n in names if "bias" in n.rsplit(".", 1)[1]}
    assert trainable_names(model) == expected
    trainable = {p.name for p in model.parameters() if not p.stop_gradient}
    assert len(trainable) == len(expected)


def test_train_and_eval_forward_agree_without_dropout(lib, make_paddle_model, ids, paddle):
    model = lora_llama(lib, make_paddle_model)
    fill_trainable(paddle, model)
    model.train()
    trained = logits(paddle, model, ids)
    model.eval()
    np.testing.assert_allclose(logits(paddle, model, ids), trained, atol=1e-6, rtol=0)


@pytest.mark.parametrize("with_config", [False, True])
def test_save_then_from_pretrained_gives_equal_outputs(lib, make_paddle_model, ids, paddle, tmp_path, with_config):
    model = lora_llama(lib, make_paddle_model, trainable_modules=[r"llama\.norm\.weight"])
    fill_trainable(paddle, model)
    expected = logits(paddle, model, ids)
    model.save_pretrained(tmp_path, merge_tensor_parallel=False)
    assert {"lora_config.json", "lora_model_state.pdparams", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    config = lib.LoRAConfig.from_pretrained(tmp_path) if with_config else None
    kwargs = {"lora_config": config} if with_config else {}
    loaded = lib.LoRAModel.from_pretrained(make_paddle_model("llama"), str(tmp_path), **kwargs)
    np.testing.assert_allclose(logits(paddle, loaded, ids), expected, atol=1e-6, rtol=0)
    assert trainable_names(loaded) == trainable_names(model)


def test_a_target_that_is_not_a_linear_layer_raises_value_error(lib, make_paddle_model, paddle):
    base = make_paddle_model("llama")
    with pytest.raises(ValueError, match="mlp"):
        lib.LoRAModel(base, lib.LoRAConfig(r=4, target_modules=[r".*\.mlp"]))


def test_merge_weights_merges_on_eval_and_unmerges_on_train(lib, make_paddle_model, ids, paddle):
    model = lora_llama(lib, make_paddle_model, merge_weights=True)
    fill_trainable(paddle, model)
    model.train()
    unmerged = logits(paddle, model, ids)
    weight = model.model.llama.layers[0].self_attn.q_proj.weight
    before = weight.numpy().copy()
    model.eval()
    assert np.abs(weight.numpy() - before).max() > 1e-4, "eval() merged the LoRA update into the weight"
    np.testing.assert_allclose(logits(paddle, model, ids), unmerged, atol=1e-5, rtol=0)
    model.train()
    np.testing.assert_allclose(weight.numpy(), before, atol=1e-6, rtol=0)


def test_print_trainable_parameters_logs_paddlenlps_line(lib, make_paddle_model, monkeypatch):
    from paddlenlp.utils.log import logger

    lines = []
    monkeypatch.setattr(logger, "debug", lambda message, *a, **k: lines.append(message))
    model = lora_llama(lib, make_paddle_model)
    model.print_trainable_parameters()
    total = sum(int(np.prod(t.shape)) for t in model.model.state_dict().values())
    trainable = sum(int(np.prod(t.shape)) for t in model.get_trainable_state_dict().values())
    assert lines[-1] == (
        f"Frozen parameters: {total - trainable:.2e} || Trainable parameters:{trainable:.2e} || "
        f"Total parameters:{total:.2e}|| Trainable:{trainable / total:.2%}"
    )


def test_attributes_fall_through_to_the_model(lib, make_paddle_model):
    model = lora_llama(lib, make_paddle_model)
    assert model.config.hidden_size == model.model.config.hidden_size
    assert model.generate.__func__ is model.model.generate.__func__


def test_peftplugs_model_is_paddlenlps_for_isinstance(make_paddle_model, paddle):
    """PaddleNLP's Trainer saves LoRA files for an instance of its LoRAModel."""
    import paddlenlp.peft

    from peftplug.paddlenlp import LoRAConfig, LoRAModel

    model = LoRAModel(make_paddle_model("llama"), LoRAConfig(target_modules=TARGETS))
    assert isinstance(model, paddlenlp.peft.LoRAModel) and isinstance(model, LoRAModel)
    assert not isinstance(make_paddle_model("llama"), LoRAModel)


@pytest.mark.parametrize("writer", LIBRARIES)
def test_files_of_one_load_in_the_other_with_equal_logits(writer, make_paddle_model, ids, paddle, tmp_path):
    reader = next(name for name in LIBRARIES if name != writer)
    written, read = library(writer), library(reader)
    model = lora_llama(written, make_paddle_model, trainable_modules=[r"llama\.norm\.weight"])
    fill_trainable(paddle, model)
    model.eval()
    expected = logits(paddle, model, ids)
    model.save_pretrained(str(tmp_path))
    loaded = read.LoRAModel.from_pretrained(make_paddle_model("llama"), str(tmp_path))
    loaded.eval()
    np.testing.assert_allclose(logits(paddle, loaded, ids), expected, atol=1e-6, rtol=0)
    assert read.LoRAConfig.from_pretrained(tmp_path).to_dict() == written.LoRAConfig.from_pretrained(tmp_path).to_dict()


def test_merge_and_unmerge_fold_paddlenlps_update(make_paddle_model, ids, paddle):
    """``merge()`` gives the weights PaddleNLP's ``merge_weights`` eval gives; ``unmerge()`` the
    original ones back (PaddleNLP 2.8's LoRAModel has no merge()/unmerge() to call)."""
    import paddlenlp.peft as theirs

    import peftplug.paddlenlp as ours

    models = [lora_llama(lib, make_paddle_model, merge_weights=lib is theirs) for lib in (ours, theirs)]
    for model in models:
        fill_trainable(paddle, model)
    original = models[0].model.llama.layers[0].self_attn.q_proj.weight.numpy().copy()
    expected = logits(paddle, models[0], ids)
    models[0].merge()
    models[1].eval()
    for layer in ("q_proj", "v_proj"):
        merged = [getattr(m.model.llama.layers[1].self_attn, layer).weight.numpy() for m in models]
        np.testing.assert_allclose(merged[0], merged[1], atol=1e-6, rtol=0)
    np.testing.assert_allclose(logits(paddle, models[0], ids), expected, atol=1e-5, rtol=0)
    models[0].unmerge()
    np.testing.assert_allclose(models[0].model.llama.layers[0].self_attn.q_proj.weight.numpy(), original, atol=1e-6)


@pytest.mark.parametrize(
    "field, value",
    [("pissa", True), ("lora_plus_scale", 4.0), ("do_qat", True), ("enable_lora_list", [[True, False, True]]),
     ("target_modules", None), ("dtype", "bfloat16"), ("trainable_modules", ["llama.norm(.weight"]),
     ("target_modules", [".*q_proj", "[v_proj"])],
)  # fmt: skip
def test_what_peftplug_does_not_implement_is_refused_by_name(make_paddle_model, paddle, field, value):
    from peftplug.paddlenlp import LoRAConfig, LoRAModel

    base = make_paddle_model("llama")
    fields = {"target_modules": TARGETS, field: value}
    with pytest.raises(ValueError, match=rf"LoRAConfig\.{field}="):
        LoRAModel(base, LoRAConfig(**fields))
    assert not any("lora" in name for name in base.state_dict()), "the model is as it was"
