"""Tiny HF and PaddleNLP causal LMs (Llama, Bloom) carrying the same base weights, the adapter
configs tried on them, and their logits and training: what the conversion and interop tests share."""

from __future__ import annotations

import numpy as np

import peftplug
from peftplug.interop.weights import copy_base_weights

TOLERANCE = 1e-4
TOKENS = 3
LLAMA = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)
BLOOM = dict(
    vocab_size=128,
    hidden_size=32,
    n_layer=2,
    n_head=4,
    tie_word_embeddings=True,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)
IDS = np.random.RandomState(1).randint(3, 128, (2, 6))

METHODS = {
    "lora": lambda: peftplug.LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
        modules_to_save=["lm_head"],
    ),
    "ia3": lambda: peftplug.IA3Config(
        task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]
    ),
    "prompt": lambda: peftplug.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS),
    "p_tuning": lambda: peftplug.PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, encoder_hidden_size=16
    ),
    "prefix": lambda: peftplug.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS),
    "prefix_projection": lambda: peftplug.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=TOKENS, prefix_projection=True, encoder_hidden_size=16
    ),
}
BLOOM_METHODS = {
    "lora": lambda: peftplug.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["query_key_value", "dense_4h_to_h"]
    ),
    "prefix": METHODS["prefix"],
}


# ---------------------------------------------------------------- models with the same base weights
def hf_model(torch, family: str, **overrides):
    import transformers

    torch.manual_seed(0)
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, **overrides}))
    else:
        model = transformers.BloomForCausalLM(transformers.BloomConfig(**{**BLOOM, **overrides}))
    return model.eval()


def paddle_model(paddle, family: str, source, **overrides):
    """The PaddleNLP model of ``family`` carrying ``source``'s (an HF model's) weights."""
    import paddlenlp.transformers as pt

    paddle.seed(1)
    if family == "llama":
        model = pt.LlamaForCausalLM(pt.LlamaConfig(**{**LLAMA, **overrides}))
    else:
        model = pt.BloomForCausalLM(pt.BloomConfig(**{**BLOOM, **overrides}))
    model.eval()
    copy_base_weights(source, model)
    return model


def torch_logits(torch, model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits.numpy()[:, -IDS.shape[1] :]


def paddle_logits(paddle, model) -> np.ndarray:
    with paddle.no_grad():
        out = model(input_ids=paddle.to_tensor(IDS), return_dict=True)
    return out.logits.numpy()[:, -IDS.shape[1] :]


def train_torch(torch, model, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    ids = torch.tensor(IDS)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def train_paddle(paddle, model, steps: int = 2) -> None:
    model.train()
    optimizer = paddle.optimizer.AdamW(
        learning_rate=2e-2, parameters=[p for p in model.parameters() if not p.stop_gradient]
    )
    ids = paddle.to_tensor(IDS)
    for _ in range(steps):
        logits = model(input_ids=ids, return_dict=True).logits[:, -IDS.shape[1] :]
        vocab = logits.shape[-1]
        loss = paddle.nn.functional.cross_entropy(logits[:, :-1].reshape([-1, vocab]), ids[:, 1:].reshape([-1]))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    model.eval()


def assert_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    difference = np.abs(got - expected).max()
    assert difference <= TOLERANCE, f"{what}: logits differ by {difference}"


def assert_changed(adapted: np.ndarray, base: np.ndarray) -> None:
    assert np.abs(adapted - base).max() > 1e-3, "the trained adapter must change the logits, or the test proves nothing"


def method_config(family: str, method: str):
    """A fresh config of ``method`` for ``family``'s test model."""
    return (METHODS if family == "llama" else BLOOM_METHODS)[method]()


def trained_on_torch(torch, family: str, method: str):
    """``(peft_model, its logits)``: ``method`` trained on the tiny HF model (checked to change
    the logits). The model wraps its base in place: build twins from a fresh ``hf_model``."""
    hf = hf_model(torch, family)
    base_logits = torch_logits(torch, hf)
    model = peftplug.get_peft_model(hf, method_config(family, method))
    train_torch(torch, model)
    expected = torch_logits(torch, model)
    assert_changed(expected, base_logits)
    return model, expected


def trained_on_paddle(torch, paddle, family: str, method: str):
    """``(paddle_base, peft_model, its logits)``: ``method`` trained on the PaddleNLP twin of the
    tiny HF model (checked to change the logits)."""
    pd = paddle_model(paddle, family, hf_model(torch, family))
    base_logits = paddle_logits(paddle, pd)
    model = peftplug.get_peft_model(pd, method_config(family, method))
    train_paddle(paddle, model)
    expected = paddle_logits(paddle, model)
    assert_changed(expected, base_logits)
    return pd, model, expected


def gpt2_twins(torch, paddle):
    """A tiny HF GPT-2 and the PaddleNLP GPT carrying its weights (no dropout)."""
    import paddlenlp.transformers as pt
    import transformers

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=128,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            tie_word_embeddings=True,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    ).eval()
    pd = pt.GPTForCausalLM(
        pt.GPTConfig(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )
    pd.eval()
    copy_base_weights(hf, pd)
    return hf, pd


def assert_torch_adapter_moves_to_paddle(torch, paddle, config, tmp_path, stem: str) -> None:
    """Train ``config`` on the torch Llama, save it in both formats (the PaddleNLP layout as
    ``<stem>_config.json`` / ``<stem>_model_state.pdparams``) and convert it; each loads on the
    Paddle Llama, and the PaddleNLP files back on torch, with the torch logits."""
    hf = hf_model(torch, "llama")
    base = torch_logits(torch, hf)
    model = peftplug.get_peft_model(hf, config)
    train_torch(torch, model, steps=3)
    expected = torch_logits(torch, model)
    assert_changed(expected, base)
    model.save_pretrained(tmp_path / "peft")
    model.save_pretrained(tmp_path / "paddlenlp", format="paddlenlp")
    names = sorted(p.name for p in (tmp_path / "paddlenlp").iterdir())
    assert names == [f"{stem}_config.json", f"{stem}_model_state.pdparams"], names
    peftplug.convert(tmp_path / "peft", tmp_path / "converted", to="paddlenlp", architecture="llama")
    for source in ("peft", "paddlenlp", "converted"):
        loaded = peftplug.PeftModel.from_pretrained(
            paddle_model(paddle, "llama", hf_model(torch, "llama")), tmp_path / source
        )
        assert_close(paddle_logits(paddle, loaded), expected, f"Paddle, from the {source} files")
    back = peftplug.PeftModel.from_pretrained(hf_model(torch, "llama"), tmp_path / "paddlenlp")
    assert_close(torch_logits(torch, back), expected, "torch, from the paddlenlp files")
