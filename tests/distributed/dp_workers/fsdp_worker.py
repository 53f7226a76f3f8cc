"""torchrun worker (2 ranks, gloo, CPU): LoRA under FSDP2 (``fully_shard`` per decoder layer and at
the root) on the tiny Llama, every check in one job.

``fsdp OUT INIT``: load INIT onto the base, shard, take one AdamW step on this rank's half of the
global batch, save (OUT/saved), merge and unmerge; load OUT/saved onto a base sharded first and
take the same step again; try what is refused on a sharded base; run several adapters with
``modules_to_save`` and prefix tuning sharded after ``get_peft_model``; then the failing saves of
:mod:`failing_saves` (OUT/fail). Rank 0 writes OUT/rank0.json and OUT/arrays.npz, rank 1
OUT/rank1.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dp_common  # noqa: E402
from dp_common import tp_common  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tp_workers"))
import failing_saves  # noqa: E402
from failing_saves import error_of  # noqa: E402

import peftplug  # noqa: E402


def shard(model, mesh):
    """``fully_shard`` every decoder layer, then the root ``model``."""
    inner = model.base_model.model if isinstance(model, peftplug.PeftModel) else model
    for layer in inner.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def whole(tensor):
    """A DTensor gathered whole (a collective), a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def mean_over_ranks(loss):
    """The mean of every rank's ``loss``."""
    loss = loss.clone()
    dist.all_reduce(loss)
    return loss / dist.get_world_size()


def step(model, ids, rank):
    """One AdamW step on this rank's half of ``ids``: (global loss, whole gradients)."""
    return dp_common.adamw_step(torch, model, dp_common.rank_batch(ids, rank), whole, mean_over_ranks)


def run(out: Path, init: Path, mesh) -> None:
    rank = dist.get_rank()
    train_ids, eval_ids = dp_common.global_batch(torch)
    report, arrays = {}, {}

    model = shard(peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), init, is_trainable=True), mesh)
    q_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    report["placement"] = [type(q_a).__name__, str(q_a.placements), list(q_a.to_local().shape)]
    report["loss"], gradients = step(model, train_ids, rank)
    arrays.update({f"grad/{name}": value for name, value in gradients.items()})
    arrays["trained"] = tp_common.logits(torch, model, eval_ids)
    model.save_pretrained(out / "saved")
    report["rank_sees_saved"] = (out / "saved" / "adapter_model.safetensors").is_file()
    model.merge_adapter()
    arrays["merged"] = tp_common.logits(torch, model, eval_ids)
    model.unmerge_adapter()
    arrays["unmerged"] = tp_common.logits(torch, model, eval_ids)

    # onto a base sharded first: each rank holds its piece, and the adapter trains as one process
    loaded = peftplug.PeftModel.from_pretrained(
        shard(tp_common.build_llama(torch), mesh), out / "saved", is_trainable=True
    )
    q_a = loaded.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    report["loaded_placement"] = [type(q_a).__name__, str(q_a.placements), list(q_a.to_local().shape)]
    arrays["loaded"] = tp_common.logits(torch, loaded, eval_ids)
    report["loaded_loss"], _ = step(loaded, train_ids, rank)
    arrays["loaded_trained"] = tp_common.logits(torch, loaded, eval_ids)
    report["second_adapter_error"] = error_of(
        lambda: loaded.add_adapter("other", peftplug.LoraConfig(r=2, target_modules=["q_proj"]))
    )
    sharded_base = shard(tp_common.build_llama(torch), mesh)
    report["modules_to_save_error"] = error_of(
        lambda: peftplug.get_peft_model(
            sharded_base, peftplug.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
        )
    )
    ran = shard(tp_common.build_llama(torch), mesh)
    tp_common.logits(torch, ran, eval_ids)
    report["after_running_error"] = error_of(
        lambda: peftplug.get_peft_model(ran, peftplug.LoraConfig(r=2, target_modules=["q_proj"]))
    )
    report["after_running_untouched"] = not any("lora_" in name for name, _ in ran.named_parameters())
    report["prefix_error"] = error_of(
        lambda: peftplug.get_peft_model(
            sharded_base, peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
        )
    )

    # several adapters and modules_to_save, then prefix tuning: get_peft_model first, then shard
    several = shard(dp_common.several_adapters(torch), mesh)
    report["several_loss"], _ = step(several, train_ids, rank)
    several.save_pretrained(out / "several")
    prefix = shard(dp_common.prefix_tuning(torch), mesh)
    report["prefix_loss"], _ = step(prefix, train_ids, rank)
    prefix.save_pretrained(out / "prefix")

    layer = model.base_model.model.model.layers[1].mlp.down_proj
    report["fail"] = failing_saves.try_failing_saves(model, layer, rank, out / "fail")
    dp_common.write_reports(out, rank, report, arrays)


def main() -> None:
    out, init = Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    (out / "fail").mkdir(parents=True, exist_ok=True)
    tp_common.run_on_every_rank(lambda: run(out, init, mesh))


if __name__ == "__main__":
    main()
