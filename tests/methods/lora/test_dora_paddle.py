"""DoRA on Paddle: adapters trained by HF PEFT load with their logits, adapters trained on Paddle
load in HF PEFT with ours, merging is exact, and what PaddleNLP cannot hold is refused."""

from __future__ import annotations

import numpy as np
import pytest
from convert_models import IDS, hf_model, paddle_logits, paddle_model, torch_logits, train_paddle, train_torch

import peftplug
from peftplug.errors import PeftplugError

peft = pytest.importorskip("peft")
TOLERANCE = 1e-5
TARGETS = ["q_proj", "v_proj", "down_proj"]


def dora_config(library):
    """A DoRA config of ``library`` (peftplug or peft) with random B, so that both the magnitude
    and the direction act from the start."""
    return library.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, use_dora=True
    )


def test_an_adapter_trained_by_peft_gives_its_logits_on_paddle(torch, paddle, tmp_path):
    hf = hf_model(torch, "llama")
    pd = paddle_model(paddle, "llama", hf)
    theirs = peft.get_peft_model(hf, dora_config(peft))
    train_torch(torch, theirs)
    theirs.save_pretrained(tmp_path)
    ours = peftplug.PeftModel.from_pretrained(pd, tmp_path)
    assert ours.peft_config["default"].use_dora
    difference = np.abs(paddle_logits(paddle, ours) - torch_logits(torch, theirs)).max()
    assert difference <= TOLERANCE


def test_an_adapter_trained_on_paddle_gives_its_logits_in_peft(torch, paddle, tmp_path):
    hf = hf_model(torch, "llama")
    ours = peftplug.get_peft_model(paddle_model(paddle, "llama", hf), dora_config(peftplug))
    train_paddle(paddle, ours)
    expected = paddle_logits(paddle, ours)
    ours.save_pretrained(tmp_path / "paddle")  # HF PEFT's files, in PaddleNLP's module tree
    peftplug.convert(tmp_path / "paddle", tmp_path / "hf", to="peft", architecture="llama")
    theirs = peft.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / "hf")
    assert np.abs(torch_logits(torch, theirs) - expected).max() <= TOLERANCE
    magnitudes = [n for n, _ in theirs.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * len(TARGETS)


def test_the_same_weights_train_alike_on_both_frameworks(torch, paddle, tmp_path):
    """Counts equal; the first loss and the magnitudes' gradients agree with torch's."""
    hf = hf_model(torch, "llama")
    pd = paddle_model(paddle, "llama", hf)
    on_torch = peftplug.get_peft_model(hf, dora_config(peftplug))
    on_torch.save_pretrained(tmp_path)
    on_paddle = peftplug.PeftModel.from_pretrained(pd, tmp_path, is_trainable=True)
    assert on_paddle.get_nb_trainable_parameters() == on_torch.get_nb_trainable_parameters()
    ids = torch.tensor(IDS)
    on_torch.train()
    loss = on_torch(input_ids=ids, labels=ids).loss
    loss.backward()
    on_paddle.train()
    logits = on_paddle(input_ids=paddle.to_tensor(IDS), return_dict=True).logits
    vocab = logits.shape[-1]
    paddle_loss = paddle.nn.functional.cross_entropy(
        logits[:, :-1].reshape([-1, vocab]), paddle.to_tensor(IDS)[:, 1:].reshape([-1])
    )
    paddle_loss.backward()
    assert abs(float(paddle_loss) - loss.item()) <= 1e-5

    def magnitude_grads(model, suffix: str) -> dict[str, np.ndarray]:
        """The magnitudes' gradients by ``layers.<i>.<module>`` (the part both trees share)."""
        return {
            n[n.index("layers.") : -len(suffix)]: p.grad.numpy()
            for n, p in model.named_parameters()
            if n.endswith(suffix)
        }

    torch_grads = magnitude_grads(on_torch, ".lora_magnitude_vector.default.weight")
    paddle_grads = magnitude_grads(on_paddle, ".lora_magnitude_vector.default")
    assert sorted(torch_grads) == sorted(paddle_grads) and len(torch_grads) == 2 * len(TARGETS)
    for name, grad in torch_grads.items():
        assert np.abs(paddle_grads[name] - grad).max() <= 1e-5, name


def test_merging_is_exact_and_paddlenlp_format_is_refused(torch, paddle, tmp_path):
    hf = hf_model(torch, "llama")
    ours = peftplug.get_peft_model(paddle_model(paddle, "llama", hf), dora_config(peftplug))
    train_paddle(paddle, ours)
    unmerged = paddle_logits(paddle, ours)
    ours.merge_adapter()
    assert np.abs(paddle_logits(paddle, ours) - unmerged).max() <= TOLERANCE
    ours.unmerge_adapter()
    assert np.abs(paddle_logits(paddle, ours) - unmerged).max() <= TOLERANCE
    with pytest.raises(PeftplugError, match="no DoRA"):
        ours.save_pretrained(tmp_path / "pd", format="paddlenlp")
    assert not (tmp_path / "pd").exists() or not any((tmp_path / "pd").iterdir())
    merged = ours.merge_and_unload()
    assert np.abs(paddle_logits(paddle, merged) - unmerged).max() <= TOLERANCE
