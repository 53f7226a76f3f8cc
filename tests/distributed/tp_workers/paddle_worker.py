"""paddle.distributed.launch worker (2 ranks, fleet mp=2): LoRA and IA3 on a PaddleNLP Llama
built with ``tensor_parallel_degree=2``.

``cpu OUT``: everything that runs without the mp forward kernels (gloo): split on load, merged
and unmerged saves in both formats, reloads, PaddleNLP's own LoRAModel on the same sharded model
(loading peftplug's merged file, saving merged and unmerged), failing saves, and, on rank 0 at
the end, the merged file in PaddleNLP's LoRAModel on an unsharded model. OUT holds ``lora_init``,
``ia3_init`` and ``degree4`` (written by the test); each rank writes ``OUT/rank<r>.json``.
``forward OUT`` (GPUs only): logits of the sharded model with the LoRA adapter against the same
weights unsharded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import failing_saves  # noqa: E402
import paddle  # noqa: E402
import paddle_common as common  # noqa: E402
from failing_saves import error_of  # noqa: E402
from paddle.distributed import fleet  # noqa: E402

import peftplug  # noqa: E402
from peftplug import PrefixTuningConfig, PromptTuningConfig  # noqa: E402
from peftplug.adapter_io import read_adapter  # noqa: E402
from peftplug.distributed.tp_save import group_of  # noqa: E402
from peftplug.distributed.tp_shards import split_array  # noqa: E402

IDS = np.random.default_rng(5).integers(3, common.VOCAB, (2, 8))


def build_llama(degree: int, rank: int):
    """The tiny PaddleNLP Llama, seed 0; sharded over the mp group when ``degree`` > 1."""
    from paddlenlp.transformers import LlamaConfig, LlamaForCausalLM

    paddle.seed(0)
    config = LlamaConfig(
        vocab_size=common.VOCAB,
        hidden_size=common.HIDDEN,
        intermediate_size=common.INTERMEDIATE,
        num_hidden_layers=common.LAYERS,
        num_attention_heads=common.HEADS,
        num_key_value_heads=common.KV_HEADS,
        tie_word_embeddings=False,
        tensor_parallel_degree=degree,
        tensor_parallel_rank=rank,
        tensor_parallel_output=False,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def layers_of(model) -> dict[str, object]:
    """The adapter layers by HF PEFT key prefix (``base_model.model.llama.layers.0...``)."""
    return {f"base_model.model.{name}": layer for name, layer in model._adapter_layers()}


def compare_pieces(model, full: dict[str, np.ndarray], axis_of, rank: int) -> dict:
    """Each local piece (and its recorded axis) against this rank's slice of the full tensor."""
    worst, count, wrong_axes = 0.0, 0, []
    for prefix, layer in layers_of(model).items():
        for suffix, (piece, axis) in layer.export_adapter_shard("default").items():
            key = f"{prefix}.{suffix}"
            if axis != axis_of(key):
                wrong_axes.append([key, axis, axis_of(key)])
            want = split_array(full[key], axis_of(key), rank, common.DEGREE)
            assert piece.shape == want.shape, (key, piece.shape, want.shape)
            worst = max(worst, float(np.abs(piece - want).max()))
            count += 1
    return {"max_diff": worst, "count": count, "wrong_axes": wrong_axes}


def max_diff(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """Largest difference between two states of the same keys (inf when the keys differ)."""
    if sorted(got) != sorted(want):
        return float("inf")
    return max(float(np.abs(got[k] - want[k]).max()) for k in want)


def run_lora(out: Path, rank: int, result: dict) -> None:
    full = read_adapter(out / "lora_init").tensors
    model = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / "lora_init", is_trainable=True)
    group = group_of(model)
    result["group"] = [group.rank, group.degree, type(group).__name__]
    result["lora_split_on_load"] = compare_pieces(model, full, common.lora_axis, rank)
    q = model.base_model.model.llama.layers[0].self_attn.q_proj
    o = model.base_model.model.llama.layers[0].self_attn.o_proj
    result["lora_layers"] = [type(q).__name__, type(o).__name__]
    result["lora_marks"] = {
        f"{name}_{m}": [
            list(p.shape),
            bool(p.is_distributed),
            getattr(p, "split_axis", None) if p.is_distributed else None,
        ]
        for name, layer in (("q", q), ("o", o))
        for m, p in (("A", layer.lora_A["default"]), ("B", layer.lora_B["default"]))
    }
    result["trainable"] = list(model.get_nb_trainable_parameters())

    model.save_pretrained(out / "lora_merged")
    result["sees_merged_after_save"] = (out / "lora_merged" / "adapter_model.safetensors").is_file()
    model.save_pretrained(out / "lora_merged_pnlp", format="paddlenlp")
    model.save_pretrained(out / "lora_shards", merge_tensor_parallel=False)
    model.save_pretrained(out / "lora_shards_pnlp", format="paddlenlp", merge_tensor_parallel=False)
    result["lora_gathered_state"] = max_diff(model.adapter_state().tensors, full)

    for source in ("lora_merged", "lora_shards", "lora_shards_pnlp"):
        again = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / source)
        result[f"lora_reload_{source}"] = compare_pieces(again, full, common.lora_axis, rank)
    result["degree_error"] = error_of(lambda: peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / "degree4"))
    result["prefix_error"] = error_of(
        lambda: peftplug.get_peft_model(
            build_llama(2, rank), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
        )
    )
    result["prompt_error"] = error_of(
        lambda: peftplug.get_peft_model(
            build_llama(2, rank), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
        )
    )

    # merging works on the local pieces: each rank's weight moves by its slice of s * A B
    before = {prefix: layer.get_base_layer().weight.numpy().copy() for prefix, layer in layers_of(model).items()}
    merged = model.merge_and_unload()
    worst = 0.0
    for prefix, weight in before.items():
        module = common.module_of(prefix + ".x")
        delta = (full[f"{prefix}.lora_B.weight"] @ full[f"{prefix}.lora_A.weight"]).T * (common.ALPHA / common.RANK)
        want = split_array(delta, 0 if module in common.ROW else 1, rank, common.DEGREE)
        got = dict(merged.named_parameters())[prefix[len("base_model.model.") :] + ".weight"].numpy() - weight
        worst = max(worst, float(np.abs(got - want).max()))
    result["lora_merge_local"] = {"max_diff": worst, "count": len(before)}


def run_ia3(out: Path, rank: int, result: dict) -> None:
    full = read_adapter(out / "ia3_init").tensors
    model = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / "ia3_init", is_trainable=True)
    result["ia3_split_on_load"] = compare_pieces(model, full, common.ia3_axis, rank)
    layers = model.base_model.model.llama.layers[0]
    result["ia3_local_shapes"] = {
        name: list(module.ia3_l["default"].shape)
        for name, module in (
            ("q", layers.self_attn.q_proj),
            ("o", layers.self_attn.o_proj),
            ("up", layers.mlp.up_proj),
            ("down", layers.mlp.down_proj),
        )
    }
    model.save_pretrained(out / "ia3_merged")
    model.save_pretrained(out / "ia3_shards", merge_tensor_parallel=False)
    result["ia3_gathered_state"] = max_diff(model.adapter_state().tensors, full)
    again = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / "ia3_shards")
    result["ia3_reload_shards"] = compare_pieces(again, full, common.ia3_axis, rank)


def run_paddlenlp(out: Path, rank: int, result: dict) -> None:
    """PaddleNLP's LoRAModel on the same sharded Llama: it loads peftplug's merged file (and
    splits it itself), then writes its own merged and unmerged saves."""
    from paddlenlp.peft import LoRAModel

    lora = LoRAModel.from_pretrained(build_llama(2, rank), str(out / "lora_merged_pnlp"))
    theirs = {k: v.numpy() for k, v in lora.get_trainable_state_dict().items()}
    ours = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / "lora_merged")
    worst, count = 0.0, 0
    for prefix, layer in layers_of(ours).items():
        paddle_name = prefix[len("base_model.model.") :]
        for matrix in ("lora_A", "lora_B"):
            mine = getattr(layer, matrix)["default"].numpy()
            worst = max(worst, float(np.abs(theirs[f"{paddle_name}.{matrix}"] - mine).max()))
            count += 1
    result["paddlenlp_split_vs_ours"] = {"max_diff": worst, "count": count, "keys": len(theirs)}
    q = lora.model.llama.layers[0].self_attn.q_proj
    o = lora.model.llama.layers[0].self_attn.o_proj
    result["paddlenlp_marks"] = {
        f"{name}_{m}": [
            list(p.shape),
            bool(p.is_distributed),
            getattr(p, "split_axis", None) if p.is_distributed else None,
        ]
        for name, layer in (("q", q), ("o", o))
        for m, p in (("A", layer.lora_A), ("B", layer.lora_B))
    }
    lora.save_pretrained(str(out / "pnlp_merged"), merge_tensor_parallel=True)
    lora.save_pretrained(str(out / "pnlp_shards"), merge_tensor_parallel=False)
    paddle.distributed.barrier()
    full = read_adapter(out / "lora_init").tensors
    for source in ("pnlp_shards", "pnlp_merged"):
        again = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / source)
        result[f"peftplug_loads_{source}"] = compare_pieces(again, full, common.lora_axis, rank)


def run_failures(out: Path, rank: int, result: dict) -> None:
    """Merged saves that must fail on both ranks, within PEFTPLUG_TP_TIMEOUT, writing nothing."""
    os.environ["PEFTPLUG_TP_TIMEOUT"] = "5"
    model = peftplug.PeftModel.from_pretrained(build_llama(2, rank), out / "lora_init", is_trainable=True)
    layer = model.base_model.model.llama.layers[1].mlp.down_proj
    directory = out / "failures"
    directory.mkdir(exist_ok=True)
    result["failures"] = failing_saves.try_failing_saves(model, layer, rank, directory)


def run_unsharded(out: Path, result: dict) -> None:
    """The merged file in PaddleNLP's LoRAModel and in peftplug on the unsharded Llama."""
    from paddlenlp.peft import LoRAModel

    full = read_adapter(out / "lora_init").tensors
    lora = LoRAModel.from_pretrained(build_llama(1, 0), str(out / "lora_merged_pnlp"))
    theirs = {f"base_model.model.{k}.weight": v.numpy().T for k, v in lora.get_trainable_state_dict().items()}
    result["unsharded_paddlenlp_tensors"] = {"max_diff": max_diff(theirs, full), "count": len(theirs)}
    ours = peftplug.PeftModel.from_pretrained(build_llama(1, 0), out / "lora_merged", is_trainable=True)
    result["unsharded_trainable"] = list(ours.get_nb_trainable_parameters())
    base = build_llama(1, 0)
    ids = paddle.to_tensor(IDS)
    with paddle.no_grad():
        logits = [m(input_ids=ids)[0].numpy() for m in (lora.model, ours, base)]
    result["unsharded_logits"] = {
        "paddlenlp_vs_peftplug": float(np.abs(logits[0] - logits[1]).max()),
        "adapter_effect": float(np.abs(logits[1] - logits[2]).max()),
    }


def run_forward(out: Path, rank: int, result: dict) -> None:
    """GPUs only: the sharded model (base weights split from the unsharded one) with the LoRA
    adapter gives the unsharded model's logits."""
    from paddlenlp.transformers import LlamaForCausalLM
    from paddlenlp.transformers.conversion_utils import ConversionMixin

    whole = build_llama(1, 0)
    whole_state = {k: v.numpy() for k, v in whole.state_dict().items()}
    sharded = build_llama(2, rank)
    actions = LlamaForCausalLM._get_tensor_parallel_mappings(sharded.config, is_split=True)
    names = ConversionMixin._resolve_prefix_keys(
        actions.keys(), whole_state.keys()
    )  # "layers.0..." -> "llama.layers.0..."
    actions = {names[k]: action for k, action in actions.items() if k in names}
    state = {k: (actions[k](v) if k in actions else v) for k, v in whole_state.items()}
    sharded.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    ids = paddle.to_tensor(IDS)
    with paddle.no_grad():
        want = peftplug.PeftModel.from_pretrained(whole, out / "lora_init")(input_ids=ids)[0].numpy()
        got = peftplug.PeftModel.from_pretrained(sharded, out / "lora_init")(input_ids=ids)[0].numpy()
    result["forward_max_diff"] = float(np.abs(got - want).max())


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "cpu":
        paddle.set_device("cpu")
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": common.DEGREE, "pp_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    rank = fleet.get_hybrid_communicate_group().get_model_parallel_rank()
    result: dict = {"rank": rank}

    def job() -> None:
        if mode == "cpu":
            run_lora(out, rank, result)
            run_ia3(out, rank, result)
            run_paddlenlp(out, rank, result)
            run_failures(out, rank, result)
            if rank == 0:  # last: no collective follows, so rank 1 may already have left
                run_unsharded(out, result)
        else:
            run_forward(out, rank, result)

    common.run_and_report(job, out, rank, result)


if __name__ == "__main__":
    main()
