"""The seed tutorial's script: a prompt-learning method on a Bloom causal LM, trained with
``transformers.Trainer`` (checkpoints every 2 steps), reloaded from the last checkpoint with
``PeftModel.from_pretrained(model=, model_id=)``, then ``generate``.

Written for HF PEFT; ``tests/support/hf_scripts.py`` runs it as it is and with ``peft`` replaced by
``peftplug`` in its import line. It reads ``MODEL_DIR``, ``OUTPUT_DIR`` and ``METHOD`` from its
globals and leaves ``RESULT``.
"""

import torch
from peft import (
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    get_peft_model,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

MODEL_DIR, OUTPUT_DIR, METHOD = globals()["MODEL_DIR"], globals()["OUTPUT_DIR"], globals()["METHOD"]

configs = {
    "prompt_tuning_text": lambda: PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        prompt_tuning_init=PromptTuningInit.TEXT,
        num_virtual_tokens=4,
        prompt_tuning_init_text="classify if the review is positive or negative",
        tokenizer_name_or_path=MODEL_DIR,
    ),
    "p_tuning_mlp": lambda: PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4, encoder_hidden_size=16
    ),
    "p_tuning_lstm": lambda: PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=4,
        encoder_hidden_size=16,
        encoder_reparameterization_type=PromptEncoderReparameterizationType.LSTM,
    ),
    "prefix_projection": lambda: PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=16
    ),
}

tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(MODEL_DIR), configs[METHOD]())
model.print_trainable_parameters()

reviews = [("the movie was great", "positive"), ("the movie was bad", "negative")] * 4
dataset = []
for text, label in reviews:
    prompt = tokenizer(f"review : {text} label :")["input_ids"]
    answer = tokenizer(f" {label}")["input_ids"] + [tokenizer.eos_token_id]
    dataset.append(
        {
            "input_ids": prompt + answer,
            "attention_mask": [1] * len(prompt + answer),
            "labels": [-100] * len(prompt) + answer,
        }
    )

args = TrainingArguments(
    output_dir=OUTPUT_DIR,
    max_steps=4,
    save_steps=2,
    per_device_train_batch_size=4,
    learning_rate=3e-2,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    disable_tqdm=True,
)
trainer = Trainer(
    model=model,
    args=args,
    train_dataset=dataset,
    data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, padding=True),
)
trainer.train()

model.eval()
reloaded = PeftModel.from_pretrained(
    model=AutoModelForCausalLM.from_pretrained(MODEL_DIR), model_id=f"{OUTPUT_DIR}/checkpoint-4"
)
batch = tokenizer(["review : the movie was great label :"], return_tensors="pt")
with torch.no_grad():
    trained_logits = model(**batch).logits
    reloaded_logits = reloaded(**batch).logits
generated = reloaded.generate(
    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=3, do_sample=False
)
RESULT = {
    "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    "logit_gap": (trained_logits - reloaded_logits).abs().max().item(),
    "logits": reloaded_logits,
    "generated": generated[0].tolist(),
    "prompt_length": batch["input_ids"].shape[1],
}
