"""torchrun worker (4 ranks, gloo, CPU): LoRA on a 2 x 2 device mesh, tensor parallelism over the
``tp`` axis (the tensor-parallel tests' plan) and ``fully_shard`` per decoder layer and at the root
over the ``dp`` axis, on the tiny Llama.

``dptp OUT INIT``: load INIT onto the tensor-parallel base, shard it with fully_shard, take one
AdamW step on this data-parallel rank's half of the global batch, save (OUT/saved), merge and
unmerge, and try an adapter on a base already sharded both ways. Rank 0 writes OUT/rank0.json
and OUT/arrays.npz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dp_common  # noqa: E402
from dp_common import tp_common  # noqa: E402
from failing_saves import error_of  # noqa: E402
from fsdp_worker import mean_over_ranks, whole  # noqa: E402

import peftplug  # noqa: E402


def shard_2d(model, mesh):
    """fully_shard over ``mesh["dp"]`` every decoder layer, then the root ``model``."""
    inner = model.base_model.model if isinstance(model, peftplug.PeftModel) else model
    for layer in inner.model.layers:
        fully_shard(layer, mesh=mesh["dp"])
    fully_shard(model, mesh=mesh["dp"])
    return model


def run(out: Path, init: Path, mesh) -> None:
    rank = dist.get_rank()
    train_ids, eval_ids = dp_common.global_batch(torch)
    report, arrays = {}, {}
    base = tp_common.shard(torch, tp_common.build_llama(torch), mesh["tp"])
    model = shard_2d(peftplug.PeftModel.from_pretrained(base, init, is_trainable=True), mesh)
    q_b = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    report["placement"] = [q_b.device_mesh.ndim, list(q_b.to_local().shape)]
    share = dp_common.rank_batch(train_ids, mesh["dp"].get_local_rank())
    report["loss"], gradients = dp_common.adamw_step(torch, model, share, whole, mean_over_ranks)
    arrays.update({f"grad/{name}": value for name, value in gradients.items()})
    arrays["trained"] = tp_common.logits(torch, model, eval_ids)
    model.save_pretrained(out / "saved")
    report["merge_error"] = error_of(model.merge_adapter)
    if report["merge_error"] is None:
        arrays["merged"] = tp_common.logits(torch, model, eval_ids)
        model.unmerge_adapter()
        arrays["unmerged"] = tp_common.logits(torch, model, eval_ids)
    sharded = shard_2d(tp_common.shard(torch, tp_common.build_llama(torch), mesh["tp"]), mesh)
    report["already_sharded_error"] = error_of(lambda: peftplug.PeftModel.from_pretrained(sharded, out / "saved"))
    if rank == 0:
        tp_common.write_json(out / "rank0.json", report)
        np.savez(out / "arrays.npz", **arrays)


def main() -> None:
    out, init = Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (2, dist.get_world_size() // 2), mesh_dim_names=("dp", "tp"))
    tp_common.run_on_every_rank(lambda: run(out, init, mesh))


if __name__ == "__main__":
    main()
