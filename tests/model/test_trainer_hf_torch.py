"""``transformers.Trainer`` with no callback saves, resumes and reloads a peftplug model as it
does HF PEFT's (issue 21): checkpoints hold the adapter and no base weights, a tied-embedding
model saves, a resumed run continues exactly, and the best checkpoint comes back."""

from __future__ import annotations

import pytest
from torch_lm import logits_of, model_inputs

import peftplug

transformers = pytest.importorskip("transformers")
BASE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _bloom(torch):
    """A tiny Bloom causal LM: its output head is tied to the input embeddings."""
    torch.manual_seed(0)
    config = transformers.BloomConfig(vocab_size=128, hidden_size=32, n_layer=2, n_head=4)
    return transformers.BloomForCausalLM(config).eval()


def _dataset(torch, rows: int = 8):
    generator = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 128, (12,), generator=generator).tolist() for _ in range(rows)]
    return [{"input_ids": row, "labels": row} for row in ids]


def _args(tmp_path, **overrides):
    settings = {
        "output_dir": str(tmp_path),
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-2,
        "lr_scheduler_type": "constant",  # the same rate whether a run is cut short or not
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    return transformers.TrainingArguments(**{**settings, **overrides})


def _lora(torch, make_base):
    torch.manual_seed(1)
    return peftplug.get_peft_model(
        make_base(), peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["query_key_value"])
    )


def _adapter(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_checkpoints_and_save_model_hold_the_adapter_and_no_base_weights(torch, tmp_path):
    model = _lora(torch, lambda: _bloom(torch))
    trainer = transformers.Trainer(model=model, args=_args(tmp_path / "run"), train_dataset=_dataset(torch))
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for directory in (tmp_path / "run" / "checkpoint-2", tmp_path / "run" / "checkpoint-4", tmp_path / "final"):
        files = {path.name for path in directory.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files, directory
        assert not files & set(BASE_WEIGHTS), directory
    inputs = model_inputs(torch, "llama")
    model.eval()
    trained = logits_of(torch, model, inputs)
    for directory in (tmp_path / "run" / "checkpoint-4", tmp_path / "final"):
        reloaded = peftplug.PeftModel.from_pretrained(model=_bloom(torch), model_id=str(directory))
        assert (logits_of(torch, reloaded, inputs) - trained).abs().max().item() <= 1e-6
    # A model that is not peftplug's is saved as transformers saves it.
    from transformers.trainer import _is_peft_model

    plain = _bloom(torch)
    assert not _is_peft_model(plain)
    transformers.Trainer(model=plain, args=_args(tmp_path, max_steps=1), train_dataset=_dataset(torch)).save_model(
        str(tmp_path / "plain")
    )
    assert (tmp_path / "plain" / "model.safetensors").is_file()
    assert not (tmp_path / "plain" / "adapter_config.json").exists()


def test_resume_from_checkpoint_continues_as_the_uninterrupted_run(torch, tmp_path):
    whole = _lora(torch, lambda: _bloom(torch))
    run = transformers.Trainer(model=whole, args=_args(tmp_path / "whole"), train_dataset=_dataset(torch))
    run.train()
    interrupted = _lora(torch, lambda: _bloom(torch))
    first = transformers.Trainer(
        model=interrupted, args=_args(tmp_path / "cut", max_steps=2), train_dataset=_dataset(torch)
    )
    first.train()
    resumed = _lora(torch, lambda: _bloom(torch))
    second = transformers.Trainer(model=resumed, args=_args(tmp_path / "cut"), train_dataset=_dataset(torch))
    second.train(resume_from_checkpoint=True)

    def losses(trainer):
        return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}

    assert losses(second)[3] == losses(run)[3] and losses(second)[4] == losses(run)[4]
    expected, got = _adapter(whole), _adapter(resumed)
    assert all((got[name] - expected[name]).abs().max().item() <= 1e-6 for name in expected)


def test_load_best_model_at_end_puts_the_best_checkpoints_adapter_back(torch, tmp_path):
    model = _lora(torch, lambda: _bloom(torch))
    args = _args(
        tmp_path, eval_strategy="steps", eval_steps=2, load_best_model_at_end=True, metric_for_best_model="eval_loss"
    )
    data = _dataset(torch)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:4])
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None
    reloaded = peftplug.PeftModel.from_pretrained(_bloom(torch), best)
    inputs = model_inputs(torch, "llama")
    model.eval()
    assert (logits_of(torch, model, inputs) - logits_of(torch, reloaded, inputs)).abs().max().item() <= 1e-6


def test_the_old_checkpoint_callback_still_works_and_says_it_is_no_longer_needed():
    from peftplug.backends.torch.trainer import AdapterCheckpointCallback

    with pytest.warns(FutureWarning, match="no longer needed"):
        AdapterCheckpointCallback()


def test_trainer_imported_after_the_model_is_wrapped_is_extended_too(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys, torch, transformers, peftplug\n"
        "assert 'transformers.trainer' not in sys.modules\n"
        "config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,\n"
        "    num_attention_heads=2, num_key_value_heads=2)\n"
        "peftplug.get_peft_model(transformers.LlamaForCausalLM(config), peftplug.LoraConfig(r=2))\n"
        "from transformers import Trainer\n"
        "from transformers.trainer import _is_peft_model\n"
        "assert Trainer._peftplug_extended and _is_peft_model.__module__.startswith('peftplug')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
