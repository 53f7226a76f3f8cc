"""torchrun worker (2 ranks, gloo, CPU): LoRA under ``DistributedDataParallel`` and under
``transformers.Trainer`` on the tiny Llama, in one job.

``ddp OUT INIT``: load INIT, wrap in DDP, take one AdamW step on this rank's half of the global
batch and save with ``is_main_process=rank == 0`` (OUT/saved); then train INIT with ``Trainer``
(2 steps of the 4-row global batch, a checkpoint each step, peftplug's AdapterCheckpointCallback)
into OUT/trainer. Rank 0 writes OUT/rank0.json and OUT/arrays.npz, rank 1 OUT/rank1.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dp_common  # noqa: E402
from dp_common import tp_common  # noqa: E402

import peftplug  # noqa: E402


def mean_over_ranks(loss):
    """The mean of every rank's ``loss``."""
    loss = loss.clone()
    dist.all_reduce(loss)
    return loss / dist.get_world_size()


def run(out: Path, init: Path) -> None:
    rank = dist.get_rank()
    train_ids, eval_ids = dp_common.global_batch(torch)
    report, arrays = {}, {}
    model = peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), init, is_trainable=True)
    ddp = DistributedDataParallel(model)
    report["loss"], gradients = dp_common.adamw_step(
        torch, ddp, dp_common.rank_batch(train_ids, rank), average=mean_over_ranks
    )
    arrays.update({f"grad/{name.removeprefix('module.')}": value for name, value in gradients.items()})
    arrays["trained"] = tp_common.logits(torch, ddp.module, eval_ids)
    ddp.module.save_pretrained(out / "saved", is_main_process=rank == 0)
    dist.barrier()
    report["rank_sees_saved"] = (out / "saved" / "adapter_model.safetensors").is_file()

    import transformers

    from peftplug.backends.torch.trainer import AdapterCheckpointCallback

    trainer_model = peftplug.PeftModel.from_pretrained(tp_common.build_llama(torch), init, is_trainable=True)
    rows = [{"input_ids": row, "labels": row} for row in train_ids.tolist()]
    args = transformers.TrainingArguments(**dp_common.trainer_arguments(out / "trainer"), ddp_backend="gloo")
    trainer = transformers.Trainer(
        model=trainer_model, args=args, train_dataset=rows, callbacks=[AdapterCheckpointCallback()]
    )
    trainer.train()
    report["trainer_world_size"] = args.world_size
    report["trainer_losses"] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    dp_common.write_reports(out, rank, report, arrays)


def main() -> None:
    out, init = Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out.mkdir(parents=True, exist_ok=True)
    tp_common.run_on_every_rank(lambda: run(out, init))


if __name__ == "__main__":
    main()
