"""transformers.Trainer trains each method, and its checkpoints load with from_pretrained."""

from __future__ import annotations

import pytest
from torch_lm import logits_of, model_inputs

import peftplug

CONFIGS = {
    "lora": lambda: peftplug.LoraConfig(task_type="CAUSAL_LM", r=4),
    "ia3": lambda: peftplug.IA3Config(task_type="CAUSAL_LM"),
    "prompt": lambda: peftplug.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "p-tuning": lambda: peftplug.PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16
    ),
    "prefix": lambda: peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
}


@pytest.mark.parametrize("method", CONFIGS)
def test_trainer_checkpoints_load_with_from_pretrained(torch, make_model, tmp_path, method):
    transformers = pytest.importorskip("transformers")
    from peftplug.backends.torch.trainer import AdapterCheckpointCallback

    model = peftplug.get_peft_model(make_model("llama"), CONFIGS[method]())
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 128, (12,), generator=generator).tolist() for _ in range(8)]
    dataset = [{"input_ids": row, "labels": row} for row in rows]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        report_to=[],
        use_cpu=True,
        save_only_model=True,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    callbacks = [AdapterCheckpointCallback()]
    transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=callbacks).train()

    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "adapter_config.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    reloaded = peftplug.PeftModel.from_pretrained(make_model("llama"), checkpoint)
    inputs = model_inputs(torch, "llama")
    model.eval()
    trained = logits_of(torch, model, inputs)
    assert (logits_of(torch, reloaded, inputs) - trained).abs().max().item() <= 1e-5
    after = dict(model.named_parameters())
    assert any(not torch.equal(after[n], value) for n, value in before.items()), "training changed nothing"


def test_the_callback_refuses_a_model_that_is_not_peftplugs_and_writes_nothing(make_model, tmp_path):
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from peftplug.backends.torch.trainer import AdapterCheckpointCallback

    state = SimpleNamespace(is_world_process_zero=True, global_step=3)
    args = SimpleNamespace(output_dir=str(tmp_path))
    with pytest.raises(TypeError, match="needs a peftplug model, got LlamaForCausalLM"):
        AdapterCheckpointCallback().on_save(args, state, None, model=make_model("llama"))
    assert list(tmp_path.iterdir()) == []
