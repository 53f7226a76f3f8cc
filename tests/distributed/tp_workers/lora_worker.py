"""torchrun worker (2 ranks, gloo, CPU): LoRA and IA3 on a DTensor tensor-parallel tiny Llama.

``train OUT INIT``: load the initial adapter INIT into the sharded model (split on load), train,
save merged (OUT/merged) and unmerged (OUT/shards), reload both into fresh sharded models, and
try a shard set of degree 4 (OUT/degree4, written by the test). Rank 0 writes OUT/rank0.json.
``ia3 OUT INIT``: the same training with the IA3 adapter INIT; merged and unmerged saves, the
vectors' placements and the losses in OUT/rank0.json.
``fail OUT INIT``: the saves of :mod:`failing_saves`, which must fail; each rank writes
OUT/fail_rank<r>.json with the errors it saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import failing_saves  # noqa: E402
import tp_common  # noqa: E402

import peftplug  # noqa: E402


def sharded_peft_model(mesh, adapter: Path, trainable: bool):
    """A fresh sharded Llama with the adapter in ``adapter`` loaded (split to this rank)."""
    model = tp_common.shard(torch, tp_common.build_llama(torch), mesh)
    return peftplug.PeftModel.from_pretrained(model, adapter, is_trainable=trainable)


def run_train(out: Path, init: Path, mesh) -> None:
    rank = dist.get_rank()
    train_ids, eval_ids = tp_common.batches(torch)
    model = sharded_peft_model(mesh, init, trainable=True)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    o_proj = model.base_model.model.model.layers[0].self_attn.o_proj
    placements = {
        "q_A": str(q_proj.lora_A["default"].weight.placements),
        "q_B": str(q_proj.lora_B["default"].weight.placements),
        "o_A": str(o_proj.lora_A["default"].weight.placements),
        "o_B": str(o_proj.lora_B["default"].weight.placements),
        "q_B_local": list(q_proj.lora_B["default"].weight.to_local().shape),
        "o_A_local": list(o_proj.lora_A["default"].weight.to_local().shape),
    }
    init_logits = tp_common.logits(torch, model, eval_ids)
    losses = tp_common.train(torch, model, train_ids)
    trained_logits = tp_common.logits(torch, model, eval_ids)
    model.save_pretrained(out / "merged")
    rank1_sees_merged = (out / "merged" / "adapter_model.safetensors").is_file()
    model.save_pretrained(out / "shards", merge_tensor_parallel=False)
    trainable, total = model.get_nb_trainable_parameters()

    resplit = tp_common.logits(torch, sharded_peft_model(mesh, out / "merged", trainable=False), eval_ids)
    from_shards = tp_common.logits(torch, sharded_peft_model(mesh, out / "shards", trainable=False), eval_ids)
    try:
        sharded_peft_model(mesh, out / "degree4", trainable=False)
        degree_error = None
    except Exception as error:  # the test checks type and message
        degree_error = f"{type(error).__name__}: {error}"
    try:  # prompt-learning methods are refused on a sharded model
        peftplug.get_peft_model(
            tp_common.shard(torch, tp_common.build_llama(torch), mesh),
            peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        )
        prefix_error = None
    except Exception as error:  # the test checks type and message
        prefix_error = f"{type(error).__name__}: {error}"
    merged_logits = tp_common.logits(torch, model.merge_and_unload(), eval_ids)
    if rank == 0:
        np.save(out / "init_logits.npy", init_logits)
        np.save(out / "trained_logits.npy", trained_logits)
        np.save(out / "resplit_logits.npy", resplit)
        np.save(out / "from_shards_logits.npy", from_shards)
        np.save(out / "merged_logits.npy", merged_logits)
        tp_common.write_json(
            out / "rank0.json",
            {
                "losses": losses,
                "placements": placements,
                "degree_error": degree_error,
                "prefix_error": prefix_error,
                "trainable": trainable,
                "total": total,
            },
        )
    else:
        tp_common.write_json(out / "rank1.json", {"sees_merged_after_save": rank1_sees_merged})


def run_ia3(out: Path, init: Path, mesh) -> None:
    train_ids, _ = tp_common.batches(torch)
    model = sharded_peft_model(mesh, init, trainable=True)
    layers = model.base_model.model.model.layers[0]
    placements = {
        name: str(module.ia3_l["default"].placements)
        for name, module in {
            "q_proj": layers.self_attn.q_proj,
            "o_proj": layers.self_attn.o_proj,
            "up_proj": layers.mlp.up_proj,
            "down_proj": layers.mlp.down_proj,
        }.items()
    }
    losses = tp_common.train(torch, model, train_ids)
    model.save_pretrained(out / "merged")
    model.save_pretrained(out / "shards", merge_tensor_parallel=False)
    if dist.get_rank() == 0:
        tp_common.write_json(out / "rank0.json", {"losses": losses, "placements": placements})


def run_fail(out: Path, init: Path, mesh) -> None:
    rank = dist.get_rank()
    model = sharded_peft_model(mesh, init, trainable=True)
    layer = model.base_model.model.model.layers[1].mlp.down_proj
    seen = failing_saves.try_failing_saves(model, layer, rank, out)
    tp_common.write_json(out / f"fail_rank{rank}.json", seen)


def main() -> None:
    mode, out, init = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    tp_common.run_on_every_rank(lambda: {"train": run_train, "ia3": run_ia3, "fail": run_fail}[mode](out, init, mesh))


if __name__ == "__main__":
    main()
