"""paddle.distributed.launch worker (2 ranks, gloo, CPU): LoRA under ``paddle.DataParallel`` on the
tiny PaddleNLP Llama of the fleet-mp tests, and PaddleNLP's ``group_sharded_parallel``.

``dp OUT``: load OUT/lora_init (written by the test), wrap in DataParallel, take one AdamW step on
this rank's half of the global batch, save in PaddleNLP's format with ``is_main_process=rank == 0``
(OUT/saved), load that onto a new wrapped model; rank 0 also takes the same step on one process,
and loads OUT/saved into PaddleNLP's LoRAModel. Then each sharding level is tried. Each rank
writes OUT/rank<r>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tp_workers"))
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
import paddle_common as common  # noqa: E402
from failing_saves import error_of  # noqa: E402
from paddle_worker import build_llama  # noqa: E402

import peftplug  # noqa: E402

LR = 0.05
GLOBAL_IDS = np.random.default_rng(6).integers(3, common.VOCAB, (4, 8))
EVAL_IDS = np.random.default_rng(7).integers(3, common.VOCAB, (2, 8))


def adamw_step(model, ids: np.ndarray, world: int) -> tuple[float, dict[str, np.ndarray]]:
    """One AdamW step of ``model`` (wrapped or not) on ``ids``: (loss averaged over the
    ``world`` ranks, the trainable parameters' gradients before the step)."""
    layer = getattr(model, "_layers", model)
    trainable = [(name, p) for name, p in layer.named_parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.AdamW(parameters=[p for _, p in trainable], learning_rate=LR, weight_decay=0.01)
    model.train()
    tokens = paddle.to_tensor(ids)
    loss = model(input_ids=tokens, labels=tokens)[0]
    loss.backward()
    gradients = {name: p.grad.numpy().copy() for name, p in trainable}
    optimizer.step()
    optimizer.clear_grad()
    model.eval()
    total = loss.detach().clone()
    if world > 1:
        dist.all_reduce(total)
    return float(total.numpy()) / world, gradients


def logits(model) -> np.ndarray:
    """Logits of the evaluation batch, without gradients."""
    with paddle.no_grad():
        return model(input_ids=paddle.to_tensor(EVAL_IDS))[0].numpy()


def largest_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """Largest difference between two dicts of arrays (inf when the keys differ)."""
    if sorted(got) != sorted(want):
        return float("inf")
    return max(float(np.abs(got[k] - want[k]).max()) for k in want)


def run_data_parallel(out: Path, rank: int, result: dict) -> None:
    model = peftplug.PeftModel.from_pretrained(build_llama(1, 0), out / "lora_init", is_trainable=True)
    wrapped = paddle.DataParallel(model)
    share = GLOBAL_IDS[rank * 2 : rank * 2 + 2]
    result["loss"], gradients = adamw_step(wrapped, share, 2)
    trained = logits(model)
    model.save_pretrained(out / "saved", format="paddlenlp", is_main_process=rank == 0)
    dist.barrier()
    result["saved"] = sorted(p.name for p in (out / "saved").iterdir())
    loaded = peftplug.PeftModel.from_pretrained(build_llama(1, 0), out / "saved", is_trainable=True)
    result["loaded_vs_trained"] = float(np.abs(logits(paddle.DataParallel(loaded)) - trained).max())
    if rank != 0:
        return
    from paddlenlp.peft import LoRAModel

    single = peftplug.PeftModel.from_pretrained(build_llama(1, 0), out / "lora_init", is_trainable=True)
    loss, single_gradients = adamw_step(single, GLOBAL_IDS, 1)
    result["loss_difference"] = abs(result["loss"] - loss)
    result["gradient_difference"] = largest_difference(gradients, single_gradients)
    result["gradient_count"] = len(gradients)
    result["smallest_gradient"] = min(float(np.abs(g).max()) for g in single_gradients.values())
    result["trained_vs_single"] = float(np.abs(trained - logits(single)).max())
    theirs = LoRAModel.from_pretrained(build_llama(1, 0), str(out / "saved"))
    result["paddlenlp_vs_trained"] = float(np.abs(logits(theirs.model) - trained).max())
    result["adapter_effect"] = float(np.abs(logits(build_llama(1, 0)) - trained).max())


def run_sharding(out: Path, result: dict) -> None:
    """Each ``group_sharded_parallel`` level on the LoRA model: what Paddle says on this device."""
    from paddle.distributed.sharding import group_sharded_parallel

    for level in ("os", "os_g", "p_g_os"):
        model = peftplug.PeftModel.from_pretrained(build_llama(1, 0), out / "lora_init", is_trainable=True)
        optimizer = paddle.optimizer.AdamW(
            parameters=[p for p in model.parameters() if not p.stop_gradient], learning_rate=LR
        )
        result[f"sharding_{level}"] = error_of(
            lambda model=model, optimizer=optimizer, level=level: group_sharded_parallel(model, optimizer, level)
        )


def main() -> None:
    out = Path(sys.argv[2])
    paddle.set_device("cpu")
    dist.init_parallel_env()
    rank = dist.get_rank()
    result: dict = {"rank": rank}

    def job() -> None:
        run_sharding(out, result)
        run_data_parallel(out, rank, result)

    common.run_and_report(job, out, rank, result)


if __name__ == "__main__":
    main()
