"""HF PEFT scripts run as written (``from peft import ...``) or with only that import changed to
``peftplug``, on tiny local models with a tiny word-level tokenizer (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "hf_scripts"
WORDS = "review : the movie was great bad label positive negative classify if is or".split()


def run_script(name: str, library: str, **settings) -> dict:
    """Execute ``hf_scripts/<name>.py`` with ``settings`` as globals and ``from peft import``
    made ``from <library> import``; returns the script's ``RESULT``."""
    source = (SCRIPTS / f"{name}.py").read_text()
    assert source.count("from peft import") == 1, "the script imports peft once"
    source = source.replace("from peft import", f"from {library} import")
    scope = {"__name__": "__hf_script__", **settings}
    exec(compile(source, str(SCRIPTS / f"{name}.py"), "exec"), scope)
    return scope["RESULT"]


def save_tokenizer(directory: Path) -> None:
    """A word-level tokenizer of :data:`WORDS` (pad 0, eos 1, unk 2) saved in ``directory``."""
    import tokenizers
    import transformers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: i + 3 for i, word in enumerate(dict.fromkeys(WORDS))}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.save_pretrained(directory)


def save_tiny_bloom(directory: Path) -> Path:
    """A tiny Bloom causal LM (tied embeddings, random weights of seed 0) and the tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BloomConfig(
        vocab_size=32, hidden_size=32, n_layer=2, n_head=4, pad_token_id=0, eos_token_id=1
    )
    transformers.BloomForCausalLM(config).save_pretrained(directory)
    save_tokenizer(directory)
    return directory


def save_tiny_mt5(directory: Path) -> Path:
    """A tiny mT5 (random weights of seed 0) and the tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.MT5Config(
        vocab_size=32,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    transformers.MT5ForConditionalGeneration(config).save_pretrained(directory)
    save_tokenizer(directory)
    return directory
