"""What the data-parallel tests (FSDP2, DDP) and their torchrun workers share: the global batch,
each rank's half of it, and one AdamW step that reports the loss and the adapter's gradients.

The tiny Llama and the initial adapter are the tensor-parallel tests' (:mod:`tp_common`). Every
sequence has the same length and no padding, so the mean of the two ranks' losses is the loss of
the global batch, and gradients averaged over the ranks (as FSDP2 and DDP reduce them) are the
global batch's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from peftplug.plugins.formats.safetensors_io import read_safetensors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tp_workers"))
import tp_common  # noqa: E402  (also used by the workers and the tests through this module)

LR = 0.05
RANKS = 2


def initial_adapter(torch, directory) -> None:
    """The tensor-parallel tests' LoRA on every projection, with random A and B (seed 2), saved
    in ``directory``."""
    import peftplug

    model = peftplug.get_peft_model(
        tp_common.build_llama(torch),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=tp_common.TARGETS),
    )
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(directory)


def several_adapters(torch):
    """LoRA ``default`` (active, ``modules_to_save=["lm_head"]``) and ``other`` (random, inactive)."""
    import peftplug

    model = peftplug.get_peft_model(
        tp_common.build_llama(torch),
        peftplug.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]),
    )
    torch.manual_seed(8)
    model.add_adapter("other", peftplug.LoraConfig(r=2, target_modules=["k_proj"], init_lora_weights=False))
    return model


def prefix_tuning(torch):
    """Prefix tuning with 4 virtual tokens (its encoder drawn after seed 9)."""
    import peftplug

    base = tp_common.build_llama(torch)
    torch.manual_seed(9)
    return peftplug.get_peft_model(base, peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))


def global_batch(torch):
    """(training batch of 4 sequences, evaluation batch of 2) of token ids."""
    generator = torch.Generator().manual_seed(5)
    return torch.randint(3, 128, (4, 8), generator=generator), torch.randint(3, 128, (2, 8), generator=generator)


def rank_batch(ids, rank: int, world: int = RANKS):
    """Rank ``rank``'s contiguous share of the global batch ``ids``."""
    share = ids.shape[0] // world
    return ids[rank * share : (rank + 1) * share]


def adapter_gradients(model, whole) -> dict:
    """The trainable parameters' gradients by name, as numpy (``whole`` turns a sharded one
    into the whole tensor: a collective)."""
    return {
        name: whole(parameter.grad).detach().float().numpy()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter.grad is not None
    }


def adamw_step(torch, model, ids, whole=lambda grad: grad, average=lambda loss: loss):
    """One AdamW step on the causal-LM loss of ``ids``: (loss as ``average`` reports it, the
    gradients before the step)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    gradients = adapter_gradients(model, whole)
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
    return float(average(loss.detach())), gradients


def trainer_arguments(output_dir) -> dict:
    """``TrainingArguments`` of the Trainer runs: 2 steps over the 4-row global batch (4 rows a
    step: 4 on one process, 2 per rank on two), a checkpoint after each, no shuffling noise in
    what a step sees (every step sees all 4 rows)."""
    return {
        "output_dir": str(output_dir),
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "per_device_train_batch_size": 4 // RANKS,
        "learning_rate": LR,
        "report_to": [],
        "use_cpu": True,
        "save_only_model": True,
        "seed": 0,
        "disable_tqdm": True,
    }


def single_process_step(torch, init, directory) -> dict:
    """The reference: the adapter in ``init`` takes one AdamW step on the whole global batch in
    this process and is saved in ``directory``; its loss, gradients and evaluation logits."""
    import peftplug

    train_ids, eval_ids = global_batch(torch)
    model = peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), init, is_trainable=True)
    loss, gradients = adamw_step(torch, model, train_ids)
    model.save_pretrained(directory)
    return {"loss": loss, "gradients": gradients, "logits": tp_common.logits(torch, model, eval_ids)}


def assert_same_files(got: Path, want: Path, tolerance: float = 1e-5) -> None:
    """Same file names, same config, same tensors (within ``tolerance``) in both directories."""
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir() if p.name != "README.md")
    for path in want.rglob("*.json"):
        assert json.loads((got / path.relative_to(want)).read_text()) == json.loads(path.read_text())
    for path in want.rglob("*.safetensors"):
        theirs, ours = read_safetensors(path), read_safetensors(got / path.relative_to(want))
        assert sorted(ours) == sorted(theirs), path
        for key in theirs:
            np.testing.assert_allclose(ours[key], theirs[key], atol=tolerance, rtol=0, err_msg=key)


def assert_step_equals_one_process(run: dict, tolerance: float = 1e-5) -> None:
    """The job's step (``run["arrays"]``: ``grad/<name>`` and ``trained`` logits, rank 0's
    report's ``loss``) against the single-process one (:func:`single_process_step`): every
    LoRA tensor of the 2 layers x 7 projections has a gradient worth comparing, and all agree."""
    assert abs(run["report"]["loss"] - run["loss"]) <= tolerance
    got = {key.split("/", 1)[1]: value for key, value in run["arrays"].items() if key.startswith("grad/")}
    assert sorted(got) == sorted(run["gradients"]) and len(got) == 2 * 7 * 2
    for name, want in run["gradients"].items():
        assert np.abs(want).max() > 1e-4, name
        np.testing.assert_allclose(got[name], want, atol=tolerance, rtol=0, err_msg=name)
    np.testing.assert_allclose(run["arrays"]["trained"], run["logits"], atol=tolerance, rtol=0)


def write_reports(out: Path, rank: int, report: dict, arrays: dict) -> None:
    """Each rank's ``report`` to OUT/rank<r>.json; rank 0's ``arrays`` to OUT/arrays.npz."""
    tp_common.write_json(out / f"rank{rank}.json", report)
    if rank == 0:
        np.savez(out / "arrays.npz", **arrays)
