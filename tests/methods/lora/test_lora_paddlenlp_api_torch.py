"""``peftplug.paddlenlp.LoRAModel`` on a torch model: a PaddleNLP-style script switched to PyTorch
by its model line gets peftplug's torch LoRA, with HF PEFT's outputs, PaddleNLP's freezing rules,
and files that PaddleNLP's own LoRAModel loads on the Paddle twin with the same logits."""

from __future__ import annotations

import numpy as np
import pytest
from convert_models import IDS, assert_close, hf_model, paddle_logits, paddle_model, torch_logits

TARGETS = [".*q_proj", ".*v_proj"]


def lora_on_torch(torch, **fields):
    from peftplug.paddlenlp import LoRAConfig, LoRAModel

    model = LoRAModel(hf_model(torch, "llama"), LoRAConfig(r=4, lora_alpha=8, target_modules=TARGETS, **fields))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.get_trainable_state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model.eval()


def test_it_is_peftplugs_torch_lora_with_hf_pefts_outputs(torch):
    peft = pytest.importorskip("peft")
    ours = lora_on_torch(torch)
    theirs = peft.get_peft_model(
        hf_model(torch, "llama"), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    state = {key.replace(".lora_A", ".lora_A.default").replace(".lora_B", ".lora_B.default"): value
             for key, value in ours.get_trainable_state_dict().items()}  # fmt: skip
    with torch.no_grad():
        for name, parameter in theirs.base_model.model.named_parameters():
            if ".lora_" in name:
                parameter.copy_(state[name.removesuffix(".weight")])
    assert_close(torch_logits(torch, ours), torch_logits(torch, theirs.eval()), "LoRAModel on torch against HF PEFT")
    assert np.abs(torch_logits(torch, ours) - torch_logits(torch, hf_model(torch, "llama"))).max() > 1e-3


def test_paddlenlps_freezing_rules_and_names_hold_on_torch(torch):
    model = lora_on_torch(torch, trainable_modules=[r"model\.norm\.weight"])
    expected = {f"model.layers.{n}.self_attn.{m}.lora_{x}" for n in (0, 1) for m in ("q_proj", "v_proj") for x in "AB"}
    assert set(model.get_trainable_state_dict()) == expected | {"model.norm.weight"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if ".lora_" in n or n == "model.model.norm.weight"
    }
    assert model.config is model.model.config


def test_restore_merge_and_modes_on_torch(torch):
    model = lora_on_torch(torch, merge_weights=True)
    adapted = torch_logits(torch, model)  # eval(): merged
    assert model.peft_model.base_model.model.model.layers[0].self_attn.q_proj.merged
    model.train()
    assert not model.peft_model.base_model.model.model.layers[0].self_attn.q_proj.merged
    assert_close(torch_logits(torch, model), adapted, "train and eval forward without dropout")
    restored = model.restore_original_model()
    assert type(restored.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert_close(torch_logits(torch, restored), torch_logits(torch, hf_model(torch, "llama")), "restored model")


def test_files_written_on_torch_load_in_paddlenlp_and_back(torch, paddle, tmp_path):
    from paddlenlp.peft import LoRAModel as PaddleNLPLoRAModel

    from peftplug.paddlenlp import LoRAModel

    model = lora_on_torch(torch, trainable_modules=[r"model\.norm\.weight"])
    expected = torch_logits(torch, model)
    model.save_pretrained(str(tmp_path), merge_tensor_parallel=False)
    theirs = PaddleNLPLoRAModel.from_pretrained(paddle_model(paddle, "llama", hf_model(torch, "llama")), str(tmp_path))
    theirs.eval()
    assert_close(paddle_logits(paddle, theirs), expected, "PaddleNLP's LoRAModel on files written on torch")
    theirs.save_pretrained(str(tmp_path / "back"))
    back = LoRAModel.from_pretrained(hf_model(torch, "llama"), str(tmp_path / "back"))
    assert_close(torch_logits(torch, back.eval()), expected, "torch LoRAModel on PaddleNLP's files")
    assert set(back.get_trainable_state_dict()) == set(model.get_trainable_state_dict())
    assert IDS.shape[0] == 2


def test_the_prefix_model_names_the_backend_it_lacks(torch):
    from peftplug.errors import BackendError
    from peftplug.paddlenlp import PrefixConfig, PrefixModelForCausalLM

    with pytest.raises(
        BackendError, match="PrefixModelForCausalLM is not available for torch models; it is for: paddle"
    ):
        PrefixModelForCausalLM(hf_model(torch, "llama"), PrefixConfig(num_prefix_tokens=2))
