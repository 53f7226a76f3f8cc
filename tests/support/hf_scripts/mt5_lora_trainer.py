"""An HF PEFT LoRA script for a seq2seq model (mT5): ``TaskType.SEQ_2_SEQ_LM``, ``Trainer``
checkpoints, reload from the last one, ``merge_and_unload``, ``generate``.

Written for HF PEFT; ``tests/support/hf_scripts.py`` runs it as it is and with ``peft`` replaced by
``peftplug`` in its import line. It reads ``MODEL_DIR`` and ``OUTPUT_DIR`` from its globals and
leaves ``RESULT``.
"""

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

MODEL_DIR, OUTPUT_DIR = globals()["MODEL_DIR"], globals()["OUTPUT_DIR"]

tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
torch.manual_seed(0)
config = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, target_modules=["q", "v"], lora_dropout=0.0)
model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(MODEL_DIR), config)
model.print_trainable_parameters()

pairs = [("the movie was great", "positive"), ("the movie was bad", "negative")] * 4
dataset = [
    {**tokenizer(f"review : {text}"), "labels": tokenizer(label)["input_ids"] + [tokenizer.eos_token_id]}
    for text, label in pairs
]
args = TrainingArguments(
    output_dir=OUTPUT_DIR,
    max_steps=4,
    save_steps=2,
    per_device_train_batch_size=4,
    learning_rate=5e-2,
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
    model=AutoModelForSeq2SeqLM.from_pretrained(MODEL_DIR), model_id=f"{OUTPUT_DIR}/checkpoint-4"
)
batch = tokenizer(["review : the movie was great"], return_tensors="pt")
decoder_input_ids = torch.zeros((1, 1), dtype=torch.long)
with torch.no_grad():
    trained_logits = model(**batch, decoder_input_ids=decoder_input_ids).logits
    reloaded_logits = reloaded(**batch, decoder_input_ids=decoder_input_ids).logits
merged = reloaded.merge_and_unload()
with torch.no_grad():
    merged_logits = merged(**batch, decoder_input_ids=decoder_input_ids).logits
generated = merged.generate(**batch, max_new_tokens=3, do_sample=False)
RESULT = {
    "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    "logit_gap": (trained_logits - reloaded_logits).abs().max().item(),
    "merged_gap": (merged_logits - reloaded_logits).abs().max().item(),
    "merged_type": type(merged).__name__,
    "logits": merged_logits,
    "generated": generated[0].tolist(),
}
