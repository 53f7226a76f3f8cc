"""Hostile and careless input to ``peftplug merge`` and ``generate``: each is one line on stderr
naming the argument or file at fault, a non-zero exit, and nothing written (a half-merged model
never). PaddleNLP bases given to ``--base`` are read by the arrays-only reader
(``test_base_weights_paddle.py``)."""

from __future__ import annotations

import pytest
from cli_runs import assert_one_line_error, run_main
from unchanged import left_as_it_was


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--base", "{base}", "--out", "{nonempty}"], "--out {nonempty} exists and is not an empty directory"),
        (["--base", "{missing}", "--out", "{out}"], "--base {missing}: no such directory or recipe file"),
        (["--base", "{adapter}", "--out", "{out}"], "--base {adapter}: not a model directory with config.json"),
    ],
)
def test_merge_refuses_bad_input_in_one_line(hf_base_and_adapter, tmp_path, argv, message):
    base, adapter, _, _ = hf_base_and_adapter
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    names = {
        "base": base,
        "adapter": adapter,
        "nonempty": tmp_path / "full",
        "missing": tmp_path / "nope",
        "out": tmp_path / "out",
    }
    code, _, err = run_main(["merge", str(adapter), *[a.format(**names) for a in argv]])
    assert code == 1
    assert_one_line_error(err, f"peftplug merge: error: {message.format(**names)}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layers", [1, 3], ids=["shallower", "deeper"])
def test_merge_onto_a_base_of_another_depth_fails_and_saves_nothing(hf_base_and_adapter, tmp_path, layers):
    """An adapter of a 2-layer model on a base of 1 or 3 layers: keys without a module, or
    modules without tensors. Python loads it with a warning (as HF PEFT does); merge must not
    save a half-merged model."""
    import transformers

    _, adapter, _, _ = hf_base_and_adapter
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "other")
    out = tmp_path / "merged"
    code, _, err = run_main(["merge", str(adapter), "--base", str(tmp_path / "other"), "--out", str(out)])
    assert code != 0
    # transformers 5 prints a loading progress bar to stderr first: the error is the last line
    last = err.strip().splitlines()[-1]
    assert last.startswith("peftplug merge: error:") and "Traceback" not in err, err
    assert "does not fit the base" in last and ("unexpected keys" in last or "no tensors for modules" in last), err
    assert not out.exists() or not any(out.iterdir())


def test_generate_refuses_a_base_without_a_tokenizer_that_bytes_do_not_fit(hf_base_and_adapter):
    """A model folder without tokenizer files, whose vocabulary is not the byte tokenizer's: an
    error naming the folder and what is missing, not a failure on token ids."""
    base, adapter, _, _ = hf_base_and_adapter
    code, out, err = run_main(["generate", str(adapter), "--base", str(base), "--prompt", "Hi"])
    assert code == 1 and out == ""
    assert_one_line_error(err, f"peftplug generate: error: --base {base}: has no tokenizer (no tokenizer_config.json)")
    assert "vocab_size 128" in err


def _broken_config(adapter):
    (adapter / "adapter_config.json").write_text('{"r": 4,\n  "peft_type": "LORA",\n}')
    return "adapter_config.json"


def _cut_weights(adapter):
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return "adapter_model.safetensors"


def _overlapping_weights(adapter):
    import json
    import struct

    weights = adapter / "adapter_model.safetensors"
    raw = weights.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    first, second = sorted(k for k in header if k != "__metadata__")[:2]
    header[second]["data_offsets"] = header[first]["data_offsets"]
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    return "adapter_model.safetensors"


@pytest.mark.parametrize("command", ["inspect", "convert", "merge"])
@pytest.mark.parametrize("damage", [_broken_config, _cut_weights, _overlapping_weights], ids=lambda f: f.__name__[1:])
def test_a_damaged_adapter_is_one_line_naming_its_file_and_nothing_is_written(
    hf_base_and_adapter, tmp_path, command, damage
):
    base, adapter, _, _ = hf_base_and_adapter
    named = damage(adapter)
    out = tmp_path / "out"
    argv = {
        "inspect": ["inspect", str(adapter)],
        "convert": ["convert", str(adapter), str(out), "--to", "paddlenlp", "--architecture", "llama"],
        "merge": ["merge", str(adapter), "--base", str(base), "--out", str(out)],
    }[command]
    with left_as_it_was(adapter, base):
        code, text, err = run_main(argv)
    assert code == 1 and text == ""
    assert_one_line_error(err.strip().splitlines()[-1], f"peftplug {command}: error: ")
    assert named in err and str(adapter) in err, err
    assert not out.exists() or not any(out.iterdir())
