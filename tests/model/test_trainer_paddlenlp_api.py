"""A LoRA fine-tuning script in the style of PaddleNLP's docs (LoRAConfig, LoRAModel,
mark_only_lora_as_trainable, PaddleNLP's Trainer with checkpoints, save_pretrained,
from_pretrained, merging) runs on peftplug with only its import line changed, and the files it
writes load in PaddleNLP's own LoRAModel with the same logits, and the other way round."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from paddle_lm import ids_batch, logits, token_rows
from paddlenlp_peft import library

PADDLENLP_IMPORT = "from paddlenlp.peft import LoRAConfig, LoRAModel"
PEFTPLUG_IMPORT = "from peftplug.paddlenlp import LoRAConfig, LoRAModel"

# The script as a PaddleNLP user writes it; `make_base`, `dataset`, `ids` and `output_dir` are given.
SCRIPT = f"""
{PADDLENLP_IMPORT}
from paddlenlp.trainer import Trainer, TrainingArguments

lora_config = LoRAConfig(target_modules=[".*q_proj.*", ".*v_proj.*"], r=4, lora_alpha=8, lora_dropout=0.0)
model = LoRAModel(make_base(), lora_config)
model.mark_only_lora_as_trainable()
model.print_trainable_parameters()

args = TrainingArguments(output_dir=output_dir, max_steps=4, save_steps=2, per_device_train_batch_size=4,
                         learning_rate=5e-2, logging_steps=1, seed=0, disable_tqdm=True, report_to=[], device="cpu")
trainer = Trainer(model=model, args=args, train_dataset=dataset)
trainer.train()
model.save_pretrained(output_dir + "/lora", merge_tensor_parallel=False)

model.eval()
trained_logits = model(input_ids=ids)[0].numpy()

lora_config = LoRAConfig.from_pretrained(output_dir + "/lora")
lora_config.merge_weights = True
merged = LoRAModel.from_pretrained(make_base(), output_dir + "/lora", lora_config=lora_config)
merged.eval()
merged_logits = merged(input_ids=ids)[0].numpy()
"""


def run_script(import_line: str, make_paddle_model, paddle, output_dir) -> dict:
    """Run SCRIPT with ``import_line`` in place of PaddleNLP's; its globals afterwards."""
    scope = {
        "make_base": lambda: make_paddle_model("llama"),
        "dataset": token_rows(paddle),
        "ids": ids_batch(paddle),
        "output_dir": str(output_dir),
    }
    exec(SCRIPT.replace(PADDLENLP_IMPORT, import_line), scope)
    return scope


def scope_library(import_line: str):
    """The module an import line of the script imports from."""
    return library(import_line.split()[1])


def resume_from(lib, run: dict, checkpoint, make_paddle_model, paddle) -> np.ndarray:
    """Logits of a fresh LoRAModel that PaddleNLP's Trainer resumes from ``checkpoint`` (through
    ``set_state_dict``) with the script's arguments, stopping there: nothing more is trained.
    The optimizer's state is not resumed: Paddle keys it by parameter names that differ for a
    second model built in the same process, for PaddleNLP's LoRAModel as for peftplug's."""
    from paddlenlp.trainer import Trainer

    args = copy.copy(run["args"])
    args.max_steps, args.ignore_load_lr_and_optim = int(checkpoint.name.rsplit("-", 1)[1]), True
    model = lib.LoRAModel(make_paddle_model("llama"), lib.LoRAConfig(**run["lora_config"].to_dict()))
    trainer = Trainer(model=model, args=args, train_dataset=run["dataset"])
    trainer.train(resume_from_checkpoint=str(checkpoint))
    model.eval()
    return logits(paddle, model, run["ids"])


@pytest.mark.parametrize(
    "import_line, reader", [(PEFTPLUG_IMPORT, "paddlenlp.peft"), (PADDLENLP_IMPORT, "peftplug.paddlenlp")]
)
def test_the_script_runs_and_its_files_load_in_the_other_library(
    import_line, reader, make_paddle_model, paddle, tmp_path
):
    run = run_script(import_line, make_paddle_model, paddle, tmp_path)
    ids = run["ids"]
    base_logits = logits(paddle, make_paddle_model("llama"), ids)
    assert np.abs(run["trained_logits"] - base_logits).max() > 1e-3, "the Trainer trained the LoRA"
    np.testing.assert_allclose(run["merged_logits"], run["trained_logits"], atol=1e-5, rtol=0)
    for step in (2, 4):
        checkpoint = tmp_path / f"checkpoint-{step}"
        names = {path.name for path in checkpoint.iterdir()}
        assert {"lora_config.json", "lora_model_state.pdparams"} <= names, names
        assert "model_state.pdparams" not in names, "a checkpoint holds the LoRA files, not the base"
        saved = paddle.load(str(checkpoint / "lora_model_state.pdparams"), return_numpy=True)
        saved.pop("StructuredToParameterName@@", None)
        expected = {
            f"llama.layers.{n}.self_attn.{m}.lora_{x}" for n in (0, 1) for m in ("q_proj", "v_proj") for x in "AB"
        }
        assert set(saved) == expected
    lib = scope_library(import_line)
    resumed = resume_from(lib, run, tmp_path / "checkpoint-2", make_paddle_model, paddle)
    at_step_2 = lib.LoRAModel.from_pretrained(make_paddle_model("llama"), str(tmp_path / "checkpoint-2"))
    at_step_2.eval()
    np.testing.assert_allclose(resumed, logits(paddle, at_step_2, ids), atol=1e-6, rtol=0)
    assert np.abs(resumed - run["trained_logits"]).max() > 1e-4, "step 2's LoRA is not step 4's"
    other = library(reader)
    for directory in (tmp_path / "lora", tmp_path / "checkpoint-4"):
        loaded = other.LoRAModel.from_pretrained(make_paddle_model("llama"), str(directory))
        loaded.eval()
        np.testing.assert_allclose(logits(paddle, loaded, ids), run["trained_logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name, reader", [("peftplug.paddlenlp", "paddlenlp.peft"), ("paddlenlp.peft", "peftplug.paddlenlp")]
)
def test_the_trainer_checkpoints_a_prefix_model_that_loads_in_the_other_library(
    name, reader, make_paddle_model, paddle, tmp_path
):
    from paddlenlp.trainer import Trainer, TrainingArguments
    from paddlenlp_peft import prefix_hooks

    lib, base = library(name), make_paddle_model("llama")
    config = base.config
    prefix_config = lib.PrefixConfig(
        num_prefix_tokens=3, num_attention_heads=config.num_attention_heads, multi_query_group_num=config.num_key_value_heads,
        num_hidden_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
    )  # fmt: skip
    model = lib.PrefixModelForCausalLM(base, prefix_config, prefix_hooks(name).llama_postprocess_past_key_value)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, save_steps=2, per_device_train_batch_size=4,
                             learning_rate=5e-2, seed=0, disable_tqdm=True, report_to=[], device="cpu")  # fmt: skip
    ids = ids_batch(paddle)
    mask = paddle.ones(ids.shape, dtype="int64")
    with paddle.no_grad():
        before = model(input_ids=ids, attention_mask=mask)[0].numpy()
    Trainer(model=model, args=args, train_dataset=token_rows(paddle)).train()
    checkpoint = tmp_path / "checkpoint-2"
    names = {path.name for path in checkpoint.iterdir()}
    assert {"prefix_config.json", "prefix_model_state.pdparams"} <= names and "model_state.pdparams" not in names
    model.eval()
    expected = model(input_ids=ids, attention_mask=mask)[0].numpy()
    assert np.abs(expected - before).max() > 1e-4, "the Trainer trained the prefix"
    loaded = library(reader).PrefixModelForCausalLM.from_pretrained(
        make_paddle_model("llama"), str(checkpoint), prefix_hooks(reader).llama_postprocess_past_key_value
    )
    loaded.eval()
    np.testing.assert_allclose(loaded(input_ids=ids, attention_mask=mask)[0].numpy(), expected, atol=1e-5, rtol=0)
