"""The ``peftplug`` command line and the built-in training job behind ``peftplug train``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from cli_runs import assert_one_line_error, run_main
from repo_root import ROOT

from peftplug.app.cli import main
from peftplug.app.instructions import (
    IGNORE_INDEX,
    DataError,
    Example,
    encode_all,
    encode_example,
    format_prompt,
    load_instructions,
    split_examples,
)
from peftplug.app.tokenizer import ByteTokenizer

LOSS_LINE = re.compile(r"held-out loss (before|after) training:\s+([0-9.]+)")
TRAIN_STEPS = 30


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PEFTPLUG_DISABLE_PLUGINS", "PEFTPLUG_LOAD_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# ----------------------------------------------------------------------------- methods
def test_methods_lists_builtins_and_imports_no_framework():
    script = (
        "import sys\n"
        "from peftplug.app.cli import main\n"
        "code = main(['methods'])\n"
        "print('FRAMEWORKS=' + ','.join(m for m in ('torch', 'paddle') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.strip().endswith("FRAMEWORKS="), out
    sections = {name: body for name, body in re.findall(r"^(\w[\w ]*):\n((?:  .*\n?)+)", out, flags=re.M)}
    assert re.search(
        r"^  torch\s+plugin peftplug\.backends\.torch \(distribution peftplug\)$", sections["backends"], re.M
    )
    assert re.search(
        r"^  lora\s+peft_type LORA\s+layer\s+LoraConfig\s+plugin peftplug\.plugins\.lora \(distribution peftplug\)$",
        sections["methods"],
        re.M,
    )
    assert re.search(
        r"^  peft\s+plugin peftplug\.plugins\.formats\.peft \(distribution peftplug\)$", sections["formats"], re.M
    )
    assert re.search(r"^  llama\s+llama\b", sections["architectures"], re.M)
    assert sections["plugin load failures"].strip() == "(none)"


def test_methods_console_script():
    script = shutil.which("peftplug", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the peftplug console script is not installed beside this interpreter")
    done = subprocess.run([script, "methods", "--json"], capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lora = next(m for m in report["methods"] if m["name"] == "lora")
    assert (lora["peft_type"], lora["plugin"], lora["distribution"]) == ("LORA", "peftplug.plugins.lora", "peftplug")
    assert {"name": "torch", "plugin": "peftplug.backends.torch", "distribution": "peftplug"}.items() <= next(
        b for b in report["backends"] if b["name"] == "torch"
    ).items()
    assert any(f["name"] == "peft" and f["distribution"] == "peftplug" for f in report["formats"])


def test_methods_reports_entry_point_failures(monkeypatch):
    import importlib.metadata

    broken = importlib.metadata.EntryPoint(name="broken", value="peftplug_no_such_plugin_module", group="peftplug")
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        return found + [broken] if kwargs.get("group") == "peftplug" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    code, out, err = run_main(["methods"])
    assert code == 0, err
    failures = out.split("plugin load failures:\n", 1)[1]
    assert "broken (distribution <unknown distribution>): ModuleNotFoundError" in failures
    assert "peftplug_no_such_plugin_module" in failures
    assert "lora" in out  # the built-ins are still listed
    code, out, _ = run_main(["methods", "--json"])
    assert [f["name"] for f in json.loads(out)["failures"]] == ["broken"]


# ----------------------------------------------------------------------------- usage and errors
@pytest.mark.parametrize("command", ["methods", "train", "inspect", "merge", "generate"])
def test_every_command_has_help_with_an_example(command):
    code, out, _ = run_main([command, "--help"])
    assert code == 0
    assert "examples:" in out and f"peftplug {command}" in out.split("examples:", 1)[1]


@pytest.mark.parametrize(
    ("argv", "code", "prefix"),
    [
        ([], 2, "peftplug: error: name a command"),
        (["bogus"], 2, "peftplug: error: argument COMMAND: invalid choice: 'bogus'"),
        (["train", "--steps", "zero"], 2, "peftplug train: error: argument --steps: not an integer"),
        (["train", "--steps", "0"], 2, "peftplug train: error: argument --steps: must be a positive integer"),
        (["train", "--lr", "-1"], 2, "peftplug train: error: argument --lr: must be a positive number"),
        (["train", "--seed", "-1"], 2, "peftplug train: error: argument --seed: must be a non-negative integer"),
        (["train", "--stesp", "3"], 2, "peftplug train: error: unrecognized arguments: --stesp"),
        (["methods", "--jsno"], 2, "peftplug methods: error: unrecognized arguments: --jsno"),
        (["train", "--max-length", "4"], 1, "peftplug train: error: --max-length must be between 8"),
        (
            ["train", "--data", "no/such/file.jsonl"],
            1,
            "peftplug train: error: --data no/such/file.jsonl is not a file",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, code, prefix):
    got, out, err = run_main(argv)
    assert got == code
    assert out == ""
    assert_one_line_error(err, prefix)


def test_bad_data_file_is_one_line_unless_debug(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "input": "", "output": "b"}\n{"instruction": 3, "output": "x"}\n')
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "out"), "--no-progress"]
    code, _, err = run_main(argv)
    assert code == 1
    assert_one_line_error(err, f"peftplug train: error: {data}, line 2: field 'instruction' must be a string")
    with pytest.raises(DataError, match="line 2"):
        main(["--debug", *argv])
    with pytest.raises(DataError, match="line 2"):
        main([*argv[:1], "--debug", *argv[1:]])
    assert not (tmp_path / "out").exists()


def test_console_script_bad_option_exits_nonzero_with_one_line():
    script = shutil.which("peftplug", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the peftplug console script is not installed beside this interpreter")
    done = subprocess.run([script, "train", "--batch-size", "-2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "peftplug train: error: argument --batch-size")


def test_a_paddle_run_prints_nothing_of_paddles_own(tmp_path, paddle):
    """``peftplug train --backend paddle`` (import, build, train, save): stderr holds none of
    Paddle's, PaddleNLP's or datasets' warnings and INFO lines (without --no-progress, the bar)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {config: {hidden_size: 32, intermediate_size: 64}}\n"
        f"training: {{steps: 1, batch_size: 4}}\noutput: {{dir: {tmp_path / 'out'}}}\n"
    )
    env = {**_clean_env(), "MKL_DEBUG_CPU_TYPE": "5", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "peftplug.app.cli", "train", str(recipe), "--backend", "paddle", "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert "saved adapter to" in done.stdout


def test_quiet_frameworks_hides_only_the_frameworks_warnings_and_restores_everything(paddle):
    """A warning raised in Paddle's files is dropped, one from peftplug's Paddle backend shown;
    after the block the warning display and logging are as they were (library users keep theirs)."""
    import logging
    import warnings

    from peftplug.app.cli import quiet_frameworks

    paddle_file = os.path.join(os.path.dirname(paddle.__file__), "nn", "layer", "layers.py")
    ours = os.path.join(str(ROOT), "backends", "paddle", "layer.py")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        show = warnings.showwarning
        with quiet_frameworks():
            warnings.warn_explicit("paddle's own", UserWarning, paddle_file, 1)
            warnings.warn_explicit("peftplug's", UserWarning, ours, 1)
            assert not logging.getLogger("paddlenlp").isEnabledFor(logging.INFO)
        assert warnings.showwarning is show
    assert [str(w.message) for w in seen] == ["peftplug's"]
    assert logging.root.manager.disable == logging.NOTSET


# ----------------------------------------------------------------------------- tokenizer and data
@pytest.mark.parametrize("text", ["", "hello world", "Grüße, 漢字 and 🙂!", "tab\tnew\nline\x00nul"])
def test_tokenizer_round_trips_text(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    framed = tokenizer.encode(text, add_bos=True, add_eos=True)
    assert framed[0] == tokenizer.bos_token_id and framed[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(framed) == text
    assert tokenizer.decode(framed + [tokenizer.pad_token_id], skip_special_tokens=False) == f"<s>{text}</s><pad>"


def test_tokenizer_vocabulary():
    tokenizer = ByteTokenizer()
    specials = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert specials == {256, 257, 258} and tokenizer.vocab_size == len(tokenizer) == 259
    assert tokenizer.decode([0xC3]) == "\ufffd"  # half a UTF-8 character
    with pytest.raises(ValueError, match="outside the byte vocabulary"):
        tokenizer.decode([259])


def test_shipped_dataset():
    resource = resources.files("peftplug.app").joinpath("data/instructions.jsonl")
    assert resource.is_file()
    examples = load_instructions()
    assert 150 <= len(examples) <= 300
    assert len({(e.instruction, e.input) for e in examples}) == len(examples)
    assert all(e.instruction and e.output for e in examples)
    train, held_out = split_examples(examples)
    assert len(held_out) == round(len(examples) * 0.125)
    assert set(train).isdisjoint(held_out) and len(train) + len(held_out) == len(examples)
    assert split_examples(examples) == (train, held_out)


def test_labels_are_masked_exactly_on_the_prompt():
    tokenizer = ByteTokenizer()
    for example in [Example("Add the two numbers.", "2 + 3", "5"), Example("What does a plonk eat?", "", "Berries.")]:
        encoded = encode_example(tokenizer, example, max_length=128)
        prompt = tokenizer.encode(format_prompt(example), add_bos=True)
        response = tokenizer.encode(example.output, add_eos=True)
        assert encoded.input_ids == prompt + response
        assert encoded.prompt_length == len(prompt)
        assert encoded.labels == [IGNORE_INDEX] * len(prompt) + response
        assert tokenizer.decode(encoded.input_ids[encoded.prompt_length :]) == example.output
    assert "Input:" not in format_prompt(Example("What does a plonk eat?", "", "Berries."))


def test_truncation_keeps_the_prompt_masked():
    tokenizer = ByteTokenizer()
    example = Example("Reverse the letters of the word.", "lantern", "nretnal")
    prompt_length = len(tokenizer.encode(format_prompt(example), add_bos=True))
    cut = encode_example(tokenizer, example, max_length=prompt_length + 3)
    assert len(cut.input_ids) == len(cut.labels) == prompt_length + 3
    assert cut.labels[:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert tokenizer.decode(cut.labels[prompt_length:]) == "nre"
    assert encode_example(tokenizer, example, max_length=prompt_length) is None
    with pytest.raises(DataError, match="raise --max-length"):
        encode_all(tokenizer, [example], max_length=prompt_length)


def test_collate_and_loss_count_only_response_tokens(torch):
    from peftplug.app.train import build_base_model
    from peftplug.backends.torch.recipe import causal_lm_loss_sum, collate

    tokenizer = ByteTokenizer()
    examples = encode_all(tokenizer, load_instructions()[:5], max_length=128)
    batch = collate(examples, tokenizer.pad_token_id)
    for row, item in enumerate(examples):
        length = len(item.input_ids)
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (batch["input_ids"].shape[1] - length)
        assert batch["labels"][row, length:].eq(IGNORE_INDEX).all()
        assert batch["input_ids"][row, length:].eq(tokenizer.pad_token_id).all()
    model = build_base_model(seed=0)
    loss_sum, count = causal_lm_loss_sum(model, batch)
    assert count == sum(len(item.input_ids) - item.prompt_length for item in examples)
    with torch.no_grad():
        reference = model(**batch).loss  # transformers' own causal-LM loss on the same labels
    assert torch.allclose(loss_sum / count, reference, atol=1e-5)


# ----------------------------------------------------------------------------- the training job
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``peftplug train --steps 30`` run through main(), in a fresh directory: (output dir, stdout)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from peftplug.manager import reset_plugin_manager

    reset_plugin_manager()
    output = tmp_path_factory.mktemp("train") / "adapter"
    code, out, err = run_main(["train", "--steps", str(TRAIN_STEPS), "--output", str(output), "--seed", "3"])
    assert code == 0, err
    return output, out, err


def test_train_saves_an_hf_peft_adapter(trained):
    output, _, _ = trained
    assert sorted(p.name for p in output.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "train_report.json",
    ]
    config = json.loads((output / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def test_train_lowers_the_held_out_loss(trained):
    _, out, err = trained
    losses = dict((when, float(value)) for when, value in LOSS_LINE.findall(out))
    assert set(losses) == {"before", "after"}, out
    assert losses["after"] < losses["before"] - 0.5, losses
    assert re.search(r"^trainable params: 16,384 \|\| all params: 123,584 \|\| trainable%: 13\.2574$", out, re.M), out
    assert "tok/s=" in err and "loss=" in err  # the progress bar


def test_saved_adapter_loads_in_hf_peft_with_the_same_logits(trained, torch):
    peft = pytest.importorskip("peft")
    import peftplug
    from peftplug.app.train import build_base_model
    from peftplug.backends.torch.recipe import collate

    output, _, _ = trained
    tokenizer = ByteTokenizer()
    batch = collate(encode_all(tokenizer, load_instructions()[:4], 128), tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    theirs = peft.PeftModel.from_pretrained(build_base_model(seed=3), str(output)).eval()
    ours = peftplug.PeftModel.from_pretrained(build_base_model(seed=3), output).eval()
    with torch.no_grad():
        logits_theirs = theirs(**inputs).logits
        logits_ours = ours(**inputs).logits
        logits_base = build_base_model(seed=3)(**inputs).logits
    assert torch.allclose(logits_theirs, logits_ours, atol=1e-5), (logits_theirs - logits_ours).abs().max()
    assert (logits_ours - logits_base).abs().max() > 1e-2  # the adapter is not a no-op
    assert theirs.get_nb_trainable_parameters()[1] == ours.get_nb_trainable_parameters()[1] == 123_584


def test_train_function_returns_the_model_it_saved(tmp_path, torch):
    import peftplug
    from peftplug.app.train import TrainOptions, build_base_model, train
    from peftplug.backends.torch.recipe import collate

    lines: list[str] = []
    result = train(TrainOptions(steps=3, batch_size=4, output=str(tmp_path / "a"), progress=False), log=lines.append)
    assert result.steps == 3 and result.tokens > 0 and result.output == tmp_path / "a"
    assert (result.trainable_params, result.all_params) == (16_384, 123_584)
    assert (result.train_examples, result.held_out_examples) == (228, 32)
    assert any(line.startswith("held-out loss after training:") for line in lines)
    tokenizer = ByteTokenizer()
    batch = collate(encode_all(tokenizer, load_instructions()[:3], 128), tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    reloaded = peftplug.PeftModel.from_pretrained(build_base_model(seed=0), tmp_path / "a").eval()
    with torch.no_grad():
        assert torch.allclose(result.model(**inputs).logits, reloaded(**inputs).logits, atol=1e-6)


# ----------------------------------------------------------------------------- inspect, merge, generate
TINY_RECIPE = """\
model:
  architecture: llama
  config: {{hidden_size: 32, intermediate_size: 64}}
  seed: 4
method: {{name: lora, r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}}
training: {{steps: 3, batch_size: 4}}
output: {{dir: {output}}}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 3-step recipe run on a hidden-32 Llama: (recipe path, adapter directory)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiny")
    recipe = root / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.format(output=root / "adapter"))
    code, _, err = run_main(["train", str(recipe), "--no-progress"])
    assert code == 0, err
    return recipe, root / "adapter"


def test_inspect_an_hf_peft_adapter(hf_base_and_adapter):
    _, adapter, _, _ = hf_base_and_adapter
    code, out, err = run_main(["inspect", str(adapter)])
    assert code == 0, err
    assert re.search(r"^method:\s+lora \(peft_type LORA, LoraConfig\)$", out, re.M), out
    assert re.search(r"^format:\s+peft: Hugging Face PEFT", out, re.M)
    assert re.search(r"^target modules:\s+q_proj, v_proj$", out, re.M)
    assert re.search(r"^parameters:\s+896 in 8 tensors \(3\.5 KiB\)$", out, re.M), out
    assert re.search(
        r"^  base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_B\.weight\s+16x4\s+float32\s+256 B$",
        out,
        re.M,
    ), out
    code, out, _ = run_main(["inspect", str(adapter), "--json"])
    report = json.loads(out)
    assert (report["method"], report["format"], report["task_type"]) == ("lora", "peft", "CAUSAL_LM")
    shapes = {t["name"]: t["shape"] for t in report["tensors"]}
    assert shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] == [4, 32]
    assert shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] == [32, 4]
    assert report["config"]["r"] == 4 and {f["name"] for f in report["files"]} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    }


def test_inspect_a_paddlenlp_adapter(tmp_path, paddle, make_paddle_model):
    """A directory written by PaddleNLP's own LoRAModel, read through the registered formats."""
    paddlenlp_peft = pytest.importorskip("paddlenlp.peft")
    if "paddlenlp" not in run_main(["methods", "--json"])[1]:
        pytest.skip("the paddlenlp format plugin is not registered")
    theirs = paddlenlp_peft.LoRAModel(
        make_paddle_model("llama"),
        paddlenlp_peft.LoRAConfig(target_modules=[".*q_proj", ".*v_proj"], r=4, lora_alpha=8),
    )
    theirs.save_pretrained(str(tmp_path))
    code, out, err = run_main(["inspect", str(tmp_path), "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert (report["method"], report["format"]) == ("lora", "paddlenlp")
    assert "lora_model_state.pdparams" in {f["name"] for f in report["files"]}
    assert len(report["tensors"]) == 8 and report["parameters"] == 2 * (4 * 32 + 32 * 4) + 2 * (4 * 32 + 16 * 4)
    code, text, _ = run_main(["inspect", str(tmp_path)])
    assert re.search(r"^format:\s+paddlenlp: ", text, re.M), text


def test_merge_with_base_loads_in_plain_transformers(hf_base_and_adapter, tmp_path, torch):
    import transformers

    base, adapter, expected, inputs = hf_base_and_adapter
    out = tmp_path / "merged"
    code, stdout, err = run_main(["merge", str(adapter), "--base", str(base), "--out", str(out)])
    assert code == 0, err
    assert "merged" in stdout and not any(out.glob("adapter_*"))
    script = (
        "import sys, torch, transformers\n"
        f"model = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()\n"
        "assert not any(m.startswith('peftplug') for m in sys.modules), 'peftplug was imported'\n"
        "ids = torch.tensor(eval(sys.argv[1]))\n"
        "with torch.no_grad():\n"
        "    torch.save(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, sys.argv[2])\n"
    )
    saved = tmp_path / "logits.pt"
    done = subprocess.run(
        [sys.executable, "-c", script, repr(inputs["input_ids"].tolist()), str(saved)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    merged_logits = torch.load(saved)
    assert (merged_logits - expected).abs().max() <= 1e-5
    plain = transformers.AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        assert (plain(**inputs).logits - expected).abs().max() > 1e-3  # the merge did something


def test_merge_with_a_recipe_as_base(tiny_run, tmp_path, torch):
    import transformers

    import peftplug
    from peftplug.app.recipe import load_recipe
    from peftplug.backends.torch.app_models import MODELS

    recipe, adapter = tiny_run
    out = tmp_path / "merged"
    code, _, err = run_main(["merge", str(adapter), "--base", str(recipe), "--out", str(out)])
    assert code == 0, err
    merged = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = peftplug.PeftModel.from_pretrained(
        MODELS.build(load_recipe(recipe).model, ByteTokenizer()), adapter
    ).eval()
    ids = torch.tensor([ByteTokenizer().encode("Task: add 2 and 3\nAnswer: ", add_bos=True)])
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - adapted(input_ids=ids).logits).abs().max() <= 1e-5


def test_merge_without_base_joins_shards(tmp_path):
    """No --base: the tensor-parallel shard files of a directory become one adapter."""
    from peftplug.distributed.tp_shards import find_shard_set

    code, _, err = run_main(["merge", str(tmp_path), "--out", str(tmp_path / "joined")])
    assert code == 1
    assert_one_line_error(err, "peftplug merge: error: ")
    assert "holds no tensor-parallel shard files" in err
    assert find_shard_set(tmp_path) is None


def test_generate_continues_a_prompt_greedily(tiny_run, torch):
    import peftplug
    from peftplug.app.recipe import load_recipe
    from peftplug.backends.torch.app_models import MODELS

    recipe, adapter = tiny_run
    code, out, err = run_main(
        ["generate", str(adapter), "--base", str(recipe), "--prompt", "Name a color.", "--max-new-tokens", "6"]
    )
    assert code == 0, err
    tokenizer = ByteTokenizer()
    model = peftplug.PeftModel.from_pretrained(MODELS.build(load_recipe(recipe).model, tokenizer), adapter).eval()
    ids = tokenizer.encode(format_prompt(Example("Name a color.", "", "")), add_bos=True)
    with torch.no_grad():
        for _ in range(6):  # greedy decoding by hand
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == tokenizer.eos_token_id:
                break
    prompt_length = len(tokenizer.encode(format_prompt(Example("Name a color.", "", "")), add_bos=True))
    assert out == tokenizer.decode(ids[prompt_length:]) + "\n"


def test_generate_on_a_paddle_base_continues_as_the_torch_base_does(tiny_run, tmp_path, paddle):
    """The torch-trained adapter on the same recipe's Paddle model (same weights, loaded across
    frameworks without a convert step) gives the same greedy continuation."""
    recipe, adapter = tiny_run
    paddle_recipe = tmp_path / "paddle.yaml"
    paddle_recipe.write_text("backend: paddle\n" + recipe.read_text())
    argv = ["generate", str(adapter), "--prompt", "Name a color.", "--max-new-tokens", "8"]
    code, on_torch, err = run_main(argv + ["--base", str(recipe)])
    assert code == 0, err
    code, on_paddle, err = run_main(argv + ["--base", str(paddle_recipe)])
    assert code == 0, err
    assert on_paddle == on_torch and len(on_torch.strip()) > 0


def test_generate_with_a_missing_adapter_is_one_line(tiny_run, tmp_path):
    recipe, _ = tiny_run
    code, _, err = run_main(["generate", str(tmp_path / "none"), "--base", str(recipe), "--prompt", "x"])
    assert code == 1
    assert_one_line_error(err, "peftplug generate: error: adapter directory")


def test_merge_onto_a_paddlenlp_base_loads_in_plain_paddlenlp(tmp_path, paddle, make_paddle_model):
    """A PaddleNLP directory as --base: the merged model is saved by PaddleNLP and loads with
    its AutoModelForCausalLM, giving the adapter model's logits."""
    import numpy as np
    from paddlenlp.transformers import AutoModelForCausalLM

    import peftplug

    make_paddle_model("llama").save_pretrained(str(tmp_path / "base"))
    model = peftplug.get_peft_model(
        make_paddle_model("llama"),
        peftplug.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    rng = np.random.default_rng(2)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.set_value(rng.normal(0, 0.2, size=parameter.shape).astype("float32"))
    model.save_pretrained(tmp_path / "adapter")
    ids = paddle.to_tensor(rng.integers(3, 128, size=(2, 7)), dtype="int64")

    def logits(m):
        with paddle.no_grad():
            out = m(input_ids=ids)
        return (out[0] if isinstance(out, (tuple, list)) else out.logits).numpy()

    expected = logits(model)
    code, stdout, err = run_main(
        ["merge", str(tmp_path / "adapter"), "--base", str(tmp_path / "base"), "--out", str(tmp_path / "merged")]
    )
    assert code == 0, err
    assert "load it with paddlenlp alone" in stdout
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    merged.eval()
    assert np.abs(logits(merged) - expected).max() <= 1e-5
    assert np.abs(logits(make_paddle_model("llama")) - expected).max() > 1e-3


def test_merge_without_base_joins_real_shard_files(hf_base_and_adapter, tmp_path):
    """Two ranks' files of a column-parallel split (lora_B cut on its output axis, lora_A whole),
    with their index: ``peftplug merge DIR --out OUT`` writes the one adapter they came from."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from peftplug.distributed.tp_shards import index_json, shard_file_name, split_array

    _, adapter, _, _ = hf_base_and_adapter
    tensors = load_file(adapter / "adapter_model.safetensors")
    axes = {key: (0 if "lora_B" in key else None) for key in tensors}
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    for rank in range(2):
        piece = {key: np.ascontiguousarray(split_array(value, axes[key], rank, 2)) for key, value in tensors.items()}
        save_file(piece, shards / shard_file_name("adapter_model.safetensors", rank, 2), metadata={"format": "pt"})
    (shards / "tensor_parallel.json").write_bytes(index_json(2, "peft", axes))
    code, out, err = run_main(["merge", str(shards), "--out", str(tmp_path / "joined")])
    assert code == 0, err
    assert out.startswith(f"joined the shards of {shards} into {tmp_path / 'joined'}")
    joined = load_file(tmp_path / "joined" / "adapter_model.safetensors")
    assert joined.keys() == tensors.keys()
    for key, value in tensors.items():
        np.testing.assert_array_equal(joined[key], value)


def test_train_says_how_many_examples_max_length_dropped(tmp_path):
    """Examples whose prompt fills max_length have no response token left to learn from: they
    are dropped, and the train output says how many and why (the others are cut to fit)."""
    pytest.importorskip("torch")
    data = tmp_path / "data.jsonl"
    lines = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(24)]
    lines += [{"instruction": "Repeat this long sentence back " * 3 + str(i), "output": "ok"} for i in range(16)]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.format(output=tmp_path / "adapter"))
    code, out, err = run_main(
        ["train", str(recipe), "--data", str(data), "--max-length", "32", "--steps", "1", "--no-progress"]
    )
    assert code == 0, err
    assert "warning: dropped 16 of 40 examples: their prompt takes all of max_length=32 tokens" in out
    assert "raise training.max_length (--max-length)" in out
    train, held_out = map(int, re.search(r"data: (\d+) training / (\d+) held-out", out).groups())
    assert train + held_out == 24


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("how", ["flag", "recipe"])
def test_train_refuses_an_output_that_holds_a_model(tmp_path, make_model, how):
    """Saving the adapter into a model's folder breaks from_pretrained of that model: refused,
    naming the folder and what it holds, before anything is written (as merge --out does)."""
    model_dir = tmp_path / "llama"
    make_model("llama").save_pretrained(model_dir)
    before = _snapshot(model_dir)
    recipe = tmp_path / "recipe.yaml"
    output = model_dir if how == "recipe" else tmp_path / "unused"
    recipe.write_text(TINY_RECIPE.format(output=output))
    argv = ["train", str(recipe), "--no-progress"] + (["--output", str(model_dir)] if how == "flag" else [])
    code, out, err = run_main(argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, "peftplug train: error: ")
    assert str(model_dir) in err and "holds a model (config.json" in err and "model.safetensors" in err
    assert _snapshot(model_dir) == before
    assert not (tmp_path / "unused").exists()


def test_train_refuses_an_output_of_unrelated_files_but_reuses_its_own(tiny_run, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("x")
    recipe, previous = tiny_run
    adapter = tmp_path / "previous"
    shutil.copytree(previous, adapter)
    code, _, err = run_main(["train", str(recipe), "--output", str(other), "--no-progress"])
    assert code == 1
    assert_one_line_error(err, f"peftplug train: error: --output {other} holds files that are not a peftplug output")
    assert "todo.txt" in err
    code, out, err = run_main(["train", str(recipe), "--output", str(adapter), "--steps", "1", "--no-progress"])
    assert code == 0, err
    assert f"saved adapter to {adapter}" in out


def test_generate_falls_back_to_bytes_for_a_model_of_the_byte_vocabulary(tmp_path, torch):
    """A model folder without tokenizer files whose vocabulary is the byte tokenizer's (what a
    recipe without a tokenizer trains, then merge saves): the byte tokenizer is used."""
    import transformers

    import peftplug

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=ByteTokenizer.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    base = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    peftplug.get_peft_model(
        base, peftplug.LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"])
    ).save_pretrained(tmp_path / "adapter")
    code, out, err = run_main(
        [
            "generate",
            str(tmp_path / "adapter"),
            "--base",
            str(tmp_path / "base"),
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "3",
            "--raw",
        ]
    )
    assert code == 0, err


@pytest.fixture
def peft_shards(hf_base_and_adapter, tmp_path):
    """The hf_base_and_adapter LoRA split for two ranks (column-parallel: lora_B cut on axis 0)
    in shard files with their index: (shard directory, the unsharded adapter directory)."""
    from peftplug.adapter_io import read_adapter
    from peftplug.distributed.tp_shards import write_shard_directory

    _, adapter, _, _ = hf_base_and_adapter
    shards = tmp_path / "shards"
    write_shard_directory(read_adapter(adapter), shards, 2, lambda key: 0 if "lora_B" in key else None)
    return shards, adapter


def test_merge_shards_with_format_writes_the_joined_adapter_in_that_format(peft_shards, tmp_path):
    """--format is the joined adapter's format (as --help says), not the shards': peft shards
    joined into PaddleNLP's files, as save_pretrained(format="paddlenlp") writes them; no message
    names a temporary folder."""
    import numpy as np

    from peftplug.adapter_io import read_adapter

    shards, adapter = peft_shards
    code, out, err = run_main(["merge", str(shards), "--out", str(tmp_path / "joined"), "--format", "paddlenlp"])
    assert code == 0, err
    assert "peftplug-tp" not in out + err
    assert sorted(p.name for p in (tmp_path / "joined").iterdir()) == ["lora_config.json", "lora_model_state.pdparams"]
    joined, expected = read_adapter(tmp_path / "joined"), read_adapter(adapter)
    assert joined.tensors.keys() == expected.tensors.keys()
    for key, value in expected.tensors.items():
        np.testing.assert_array_equal(joined.tensors[key], value)


def test_an_unreadable_shard_is_reported_in_the_shard_folder(peft_shards, tmp_path):
    shards, _ = peft_shards
    config = json.loads((shards / "adapter_config.json").read_text())
    (shards / "adapter_config.json").write_text(json.dumps({**config, "r": -1}))
    code, _, err = run_main(["merge", str(shards), "--out", str(tmp_path / "joined")])
    assert code == 1
    assert_one_line_error(err, f"peftplug merge: error: the tensor-parallel shards in {str(shards)!r}")
    assert "adapter_model.tp00-of-02.safetensors" in err and "peftplug-tp" not in err
    assert not (tmp_path / "joined").exists()


def test_inspect_a_shard_folder_shows_the_joined_adapter(peft_shards):
    shards, adapter = peft_shards
    code, whole, err = run_main(["inspect", str(adapter), "--json"])
    assert code == 0, err
    code, out, err = run_main(["inspect", str(shards), "--json"])
    assert code == 0, err
    report, expected = json.loads(out), json.loads(whole)
    assert report["tensor_parallel_degree"] == 2 and expected["tensor_parallel_degree"] is None
    assert report["format"] == "peft" and report["method"] == "lora"
    assert report["tensors"] == expected["tensors"]
    assert "adapter_model.tp01-of-02.safetensors" in [f["name"] for f in report["files"]]
    code, text, err = run_main(["inspect", str(shards)])
    assert code == 0, err
    assert "tensor parallel: shard files of 2 ranks, joined for this report" in text
