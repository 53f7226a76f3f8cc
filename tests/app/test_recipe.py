"""Recipes: validation before any work (one-line errors naming file, line, field and value),
the formats, the data, and ``peftplug train RECIPE`` end to end on torch."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

from peftplug.app.cli import main
from peftplug.app.instructions import IGNORE_INDEX, Example, encode_example, load_instructions
from peftplug.app.recipe import BACKEND_ENV, DEFAULT_RECIPE, RecipeError, load_recipe
from peftplug.app.recipe_data import PromptPair, encode_pair, load_pairs, steps_for_epochs
from peftplug.app.tokenizer import ByteTokenizer
from peftplug.app.train_options import TrainOptions, apply_options


def _run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- errors
ERRORS = {
    "unknown method": (
        "method:\n  name: lorra\n  r: 4\n",
        ["line 2", "method.name='lorra'", "not a registered method", "lora", "did you mean 'lora'"],
    ),
    "unknown method field": (
        "method:\n  name: lora\n  rank: 4\n",
        ["line 3", "method.rank=4", "not a field of LoraConfig", "lora_alpha"],
    ),
    "unknown section": (
        "backend: torch\ntrainig:\n  steps: 3\n",
        ["line 2", "trainig=", "not a recipe field", "did you mean 'training'"],
    ),
    "unknown training field": (
        "training:\n  steps: 3\n  warmup: 5\n",
        ["line 3", "training.warmup=5", "not a recipe field of section 'training'", "max_length"],
    ),
    "wrong type": (
        "training:\n  steps: ten\n",
        ["line 2", "training.steps='ten'", "wrong type (str)", "an integer >= 1"],
    ),
    "wrong type in the method config": (
        "method:\n  name: lora\n  r: four\n",
        ["line 3", "method.r='four'", "invalid for LoraConfig", "expected int"],
    ),
    "invalid method value": (
        "method:\n  name: lora\n  bias: some\n",
        ["line 3", "method.bias='some'", "invalid for LoraConfig", "'none'"],
    ),
    "missing data file": (
        "data:\n  path: no/such/data.jsonl\n",
        ["line 2", "data.path='no/such/data.jsonl'", "is not a file"],
    ),
    "unknown architecture": (
        "model:\n  architecture: mamba\n",
        ["line 2", "model.architecture='mamba'", "not a built-in architecture", "gpt2, llama, qwen2"],
    ),
    "unknown backend": (
        "backend: jax\n",
        ["line 1", "backend='jax'", "not a registered backend", "torch"],
    ),
    "unknown model setting": (
        "model:\n  architecture: llama\n  config:\n    hidden: 32\n",
        ["line 4", "model.config.hidden=32", "hidden_size"],
    ),
    "unknown output format": (
        "output:\n  format: pef\n",
        ["line 3", "output.format='pef'", "not a registered format", "did you mean 'peft'"],
    ),
    "steps and epochs": (
        "training:\n  steps: 3\n  epochs: 1\n",
        ["line 3", "training.epochs=1", "cannot be given with training.steps"],
    ),
    "eval split out of range": (
        "data:\n  eval_split: 1.5\n",
        ["line 2", "data.eval_split=1.5", "between 0 and 1"],
    ),
    "duplicate key": (
        "training:\n  steps: 3\n  steps: 4\n",
        ["line 3", "training.steps is given twice", "first on line 2"],
    ),
    "yaml syntax": (
        "training:\n  steps: [3\n",
        ["not valid YAML"],
    ),
    "not a mapping": (
        "- torch\n- lora\n",
        ["a recipe is a mapping of sections"],
    ),
}


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_each_kind_of_error_is_one_line_and_writes_nothing(kind, tmp_path):
    text, expected = ERRORS[kind]
    output = tmp_path / "out"
    if kind == "not a mapping":
        pass  # no output section can be added to a list
    elif "output:" in text:
        text = text.replace("output:\n", f"output:\n  dir: {output}\n")
    else:
        text += f"output:\n  dir: {output}\n"
    recipe = _write(tmp_path, text)
    code, out, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"peftplug train: error: {recipe}"), err
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert out == ""
    assert not output.exists()


def test_backend_not_installed_is_named(tmp_path, monkeypatch):
    """A registered backend whose framework is missing: simulated by hiding paddlenlp (an
    entry of None in sys.modules is how Python marks a module as unimportable)."""
    monkeypatch.setitem(sys.modules, "paddlenlp", None)
    output = tmp_path / "out"
    recipe = _write(tmp_path, f"backend: paddle\noutput:\n  dir: {output}\n")
    code, _, err = _run_main(["train", str(recipe)])
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    # "needs paddlenlp", or "needs paddle, paddlenlp" where paddle is missing too
    assert re.match(
        rf"peftplug train: error: {re.escape(str(recipe))}, line 1: backend='paddle' needs (paddle, )?paddlenlp", err
    ), err
    assert "not installed" in err and "pip install" not in err and "peftplug[paddle]" in err
    assert not output.exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_backend_override_is_checked_and_named(how, tmp_path, monkeypatch):
    output = tmp_path / "out"
    recipe = _write(tmp_path, f"backend: torch\noutput:\n  dir: {output}\n")
    argv = ["train", str(recipe)]
    if how == "flag":
        argv += ["--backend", "jax"]
        prefix = "peftplug train: error: --backend='jax' is not a registered backend"
    else:
        monkeypatch.setenv(BACKEND_ENV, "jax")
        prefix = f"peftplug train: error: {BACKEND_ENV}='jax' is not a registered backend"
    code, _, err = _run_main(argv)
    assert code == 1 and err.startswith(prefix), err
    assert not output.exists()


def test_backend_precedence(tmp_path, monkeypatch):
    recipe = _write(tmp_path, "backend: torch\n")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert load_recipe(recipe).backend == "torch"
    pytest.importorskip("paddle")
    pytest.importorskip("paddlenlp")
    monkeypatch.setenv(BACKEND_ENV, "paddle")
    assert load_recipe(recipe).backend == "paddle"
    assert load_recipe(recipe, backend="torch").backend == "torch"


def test_bad_data_record_names_file_and_line_before_training(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    output = tmp_path / "out"
    recipe = _write(tmp_path, f"data:\n  path: {data}\noutput:\n  dir: {output}\n")
    code, out, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 1 and out == ""
    assert err.strip() == f"peftplug train: error: {data}, line 2: field 'completion' must be a string, got NoneType"
    assert not output.exists()


def test_flags_are_checked_over_a_recipe(tmp_path):
    recipe = _write(tmp_path, f"output:\n  dir: {tmp_path / 'out'}\n")
    code, _, err = _run_main(["train", str(recipe), "--max-length", "4"])
    assert code == 1 and err.startswith("peftplug train: error: --max-length must be between 8"), err


# ----------------------------------------------------------------------------- formats and defaults
def test_json_and_toml_recipes_equal_the_yaml_one(tmp_path):
    yaml_recipe = load_recipe(
        _write(
            tmp_path,
            "method:\n  name: ia3\n  target_modules: [k_proj, down_proj]\n"
            "  feedforward_modules: [down_proj]\ntraining:\n  lr: 1e-3\n  steps: 7\n",
        )
    )
    data = {
        "method": {"name": "ia3", "target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
        "training": {"lr": 0.001, "steps": 7},
    }
    json_recipe = load_recipe(_write(tmp_path, json.dumps(data, indent=2), "recipe.json"))
    toml_recipe = load_recipe(
        _write(
            tmp_path,
            '[method]\nname = "ia3"\ntarget_modules = ["k_proj", "down_proj"]\n'
            'feedforward_modules = ["down_proj"]\n[training]\nlr = 1e-3\nsteps = 7\n',
            "recipe.toml",
        )
    )
    for recipe in (json_recipe, toml_recipe):
        assert recipe.replace(origin="") == yaml_recipe.replace(origin="")
    assert yaml_recipe.training.lr == 1e-3  # YAML 1.1 reads "1e-3" as a string; recipes read it as YAML 1.2 does
    assert type(yaml_recipe.method_config).__name__ == "IA3Config"


def test_json_recipe_errors_have_lines(tmp_path):
    recipe = _write(tmp_path, '{\n  "training": {\n    "steps": "x"\n  }\n}\n', "recipe.json")
    with pytest.raises(RecipeError, match=r"recipe\.json, line 3: training\.steps='x' has the wrong type"):
        load_recipe(recipe)


def test_unknown_recipe_suffix(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown file type '\.ini'; allowed: \.yaml"):
        load_recipe(_write(tmp_path, "", "recipe.ini"))


def test_the_default_recipe_is_the_flags_job(tmp_path):
    """The embedded recipe, the defaults of ``peftplug train`` and ``--show-recipe`` agree."""
    recipe = load_recipe(None)
    options = TrainOptions()
    assert recipe.backend == "torch" and recipe.method == "lora" and recipe.model.architecture == "llama"
    assert (
        recipe.training.steps,
        recipe.training.lr,
        recipe.training.batch_size,
        recipe.training.seed,
        recipe.training.max_length,
    ) == (options.steps, options.lr, options.batch_size, options.seed, options.max_length)
    assert (recipe.output.dir, recipe.data_path, recipe.model.seed) == (options.output, options.data, options.seed)
    config = recipe.method_config
    assert (config.r, config.lora_alpha, config.task_type) == (8, 16, "CAUSAL_LM")
    code, shown, _ = _run_main(["train", "--show-recipe"])
    assert code == 0 and shown == DEFAULT_RECIPE
    assert load_recipe(_write(tmp_path, shown)).replace(origin="") == recipe.replace(origin="")
    changed = apply_options(recipe, {"steps": 5, "seed": 3, "output": "x", "data": None})
    assert (changed.training.steps, changed.training.seed, changed.model.seed, changed.output.dir) == (5, 3, 3, "x")


def test_show_recipe_shows_the_recipe_the_flags_would_run(tmp_path, monkeypatch):
    """``--show-recipe`` with ``--backend`` and other flags prints a recipe that, run without
    them, is the one they would run; a JSON recipe comes back as YAML."""
    pytest.importorskip("paddle")
    pytest.importorskip("paddlenlp")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    json_recipe = _write(tmp_path, json.dumps({"backend": "torch", "output": "o", "method": "ia3"}), "r.json")
    cases = [
        (None, [], {}),
        (None, ["--steps", "5", "--output", "x"], {"steps": 5, "output": "x"}),
        (json_recipe, ["--seed", "3"], {"seed": 3}),
    ]
    for recipe, flags, options in cases:
        argv = ["train"] + ([str(recipe)] if recipe else []) + ["--show-recipe", "--backend", "paddle"] + flags
        code, shown, err = _run_main(argv)
        assert code == 0, err
        assert shown.startswith("# ") and "backend: paddle\n" in shown, shown
        expected = apply_options(load_recipe(recipe, backend="paddle"), options)
        assert load_recipe(_write(tmp_path, shown)).replace(origin="") == expected.replace(origin=""), shown


# ----------------------------------------------------------------------------- data
def test_prompt_completion_and_instruction_records(tmp_path):
    tokenizer = ByteTokenizer()
    records = [
        {"instruction": "Add.", "input": "2 + 3", "output": "5"},
        {"prompt": "Q: sky? A:", "completion": " blue"},
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    (tmp_path / "d.csv").write_text('prompt,completion\n"Q: sky? A:", blue\n')
    pairs = load_pairs(tmp_path / "d.json")
    example = Example("Add.", "2 + 3", "5")
    assert encode_pair(tokenizer, pairs[0], 128) == encode_example(tokenizer, example, 128)
    encoded = encode_pair(tokenizer, pairs[1], 128)
    prompt_length = len(tokenizer.encode("Q: sky? A:")) + 1
    assert encoded.labels[:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert tokenizer.decode(encoded.labels[prompt_length:]) == " blue"
    assert load_pairs(tmp_path / "d.csv") == [PromptPair("Q: sky? A:", " blue")]
    shipped = load_pairs(None)
    assert len(shipped) == len(load_instructions())


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("d.json", '{"prompt": "a"}', "expected a JSON list of records"),
        ("d.json", '[{"prompt": "a", "completion": ""}]', "record 0: field 'completion' is empty"),
        (
            "d.csv",
            "question,answer\nx,y\n",
            "line 2: no instruction/output or prompt/completion fields (found: answer, question)",
        ),
        ("d.jsonl", '{"instruction": "a", "output": "b"}\n[1]\n', "line 2: expected an object"),
        (
            "d.csv",
            'instruction,output\na,b\nc,"d\n',
            "line 3: unexpected end of data (a quote opened and never closed",
        ),
    ],
)
def test_bad_data_files(tmp_path, name, text, message):
    from peftplug.app.instructions import DataError

    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pairs(tmp_path / name)


def test_epochs_become_steps():
    assert steps_for_epochs(2, examples=100, batch_size=8) == 24
    assert steps_for_epochs(0.5, examples=3, batch_size=8) == 1


# ----------------------------------------------------------------------------- running
def test_default_recipe_trains_and_the_eval_loss_goes_down(tmp_path, torch):
    """The embedded recipe, as a file, through ``peftplug train RECIPE``: 100 steps on CPU."""
    output = tmp_path / "adapter"
    recipe = _write(tmp_path, DEFAULT_RECIPE.replace("dir: peftplug-out", f"dir: {output}"))
    code, out, err = _run_main(["train", str(recipe)])
    assert code == 0, err
    assert "tok/s=" in err and "loss=" in err  # the progress bar
    report = json.loads((output / "train_report.json").read_text())
    assert report["backend"] == "torch" and report["steps"] == 100 and len(report["losses"]) == 100
    assert report["eval_loss_after"] < report["eval_loss_before"] - 0.5, report
    assert report["eval_perplexity_after"] == pytest.approx(2.718281828 ** report["eval_loss_after"], rel=1e-6)
    assert (report["trainable_params"], report["all_params"]) == (16_384, 123_584)
    assert report["tokens_per_second"] > 0 and report["seconds"] > 0
    assert sum(report["losses"][-10:]) < sum(report["losses"][:10])
    assert (output / "adapter_config.json").is_file() and (output / "adapter_model.safetensors").is_file()


def test_recipe_with_another_method_architecture_and_data(tmp_path, torch):
    """IA3 on a tiny Qwen2 from a CSV of prompt/completion pairs, for 2 epochs, merged on save:
    the merged model loads in plain transformers and gives the adapter model's logits."""
    import transformers

    data = tmp_path / "d.csv"
    data.write_text(
        "prompt,completion\n" + "".join(f"Count {i}:,{' '.join(str(j) for j in range(i))}\n" for i in range(2, 20))
    )
    output = tmp_path / "out"
    recipe = _write(
        tmp_path,
        f"""
model:
  architecture: qwen2
  config: {{hidden_size: 32, intermediate_size: 64}}
  seed: 5
method: {{name: ia3}}
data: {{path: {data}, eval_split: 0.2}}
training: {{epochs: 2, batch_size: 4, lr: 5e-2, max_length: 64}}
output: {{dir: {output}, merge: true}}
""",
    )
    code, out, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 0, err
    report = json.loads((output / "train_report.json").read_text())
    assert report["method"] == "ia3" and report["steps"] == 2 * (14 // 4)
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    import peftplug
    from peftplug.backends.torch.app_models import MODELS

    merged = transformers.AutoModelForCausalLM.from_pretrained(output / "merged").eval()
    adapted = peftplug.PeftModel.from_pretrained(
        MODELS.build(load_recipe(recipe).model, ByteTokenizer()), output
    ).eval()
    ids = torch.tensor([ByteTokenizer().encode("Count 5:", add_bos=True)])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- both backends
@pytest.fixture
def paddle_recipe_backend(paddle):
    """Paddle and PaddleNLP installed; torch is needed too, for the shared initial weights."""
    pytest.importorskip("transformers")
    return paddle


def test_same_recipe_on_both_backends_gives_the_same_losses(tmp_path, torch, paddle_recipe_backend):
    """Only ``backend`` differs: same base weights, same adapter init, same batches. The first
    step's loss agrees within 1e-4, the curve within 1e-3, and both adapters count the same."""
    reports = {}
    for backend in ("torch", "paddle"):
        output = tmp_path / backend
        recipe = _write(
            tmp_path,
            DEFAULT_RECIPE.replace("dir: peftplug-out", f"dir: {output}")
            .replace("steps: 100", "steps: 8")
            .replace("backend: torch", f"backend: {backend}"),
        )
        code, _, err = _run_main(["train", str(recipe), "--no-progress"])
        assert code == 0, err
        reports[backend] = json.loads((output / "train_report.json").read_text())
    torch_report, paddle_report = reports["torch"], reports["paddle"]
    side_by_side = "\n".join(
        f"step {i + 1}: torch {a:.6f}  paddle {b:.6f}"
        for i, (a, b) in enumerate(zip(torch_report["losses"], paddle_report["losses"]))
    )
    assert paddle_report["backend"] == "paddle"
    assert abs(torch_report["losses"][0] - paddle_report["losses"][0]) <= 1e-4, side_by_side
    assert max(abs(a - b) for a, b in zip(torch_report["losses"], paddle_report["losses"])) <= 1e-3, side_by_side
    assert abs(torch_report["eval_loss_after"] - paddle_report["eval_loss_after"]) <= 1e-3
    assert torch_report["trainable_params"] == paddle_report["trainable_params"] == 16_384


def test_default_recipe_trains_on_paddle(tmp_path, paddle_recipe_backend):
    """The embedded recipe with ``--backend paddle``: the held-out loss goes down."""
    output = tmp_path / "adapter"
    code, out, err = _run_main(["train", "--backend", "paddle", "--output", str(output), "--no-progress"])
    assert code == 0, err
    report = json.loads((output / "train_report.json").read_text())
    assert report["backend"] == "paddle" and report["steps"] == 100
    assert report["eval_loss_after"] < report["eval_loss_before"] - 0.5, report
    assert "on Paddle" in out


PROMPT_METHODS = {
    "prompt_tuning": "{name: prompt_tuning, num_virtual_tokens: 4}",
    "p_tuning": "{name: p_tuning, num_virtual_tokens: 4, encoder_hidden_size: 16}",
    "prefix_tuning": "{name: prefix_tuning, num_virtual_tokens: 4, prefix_projection: true, encoder_hidden_size: 16}",
}


@pytest.mark.parametrize("method", sorted(PROMPT_METHODS))
def test_prompt_methods_switch_to_paddle_by_the_backend_flag(tmp_path, paddle_recipe_backend, method):
    """A torch recipe of each prompt-learning method runs with ``--backend paddle`` (the torch
    runner's initial adapter is moved to PaddleNLP's tree and conventions), and the adapter it
    saves loads onto the same base with the held-out loss of the report."""
    import peftplug
    from peftplug.app.recipe_run import prepare_data
    from peftplug.backends.paddle.app_models import MODELS
    from peftplug.backends.paddle.recipe import evaluate

    output = tmp_path / "out"
    recipe = _write(
        tmp_path,
        f"backend: torch\nmodel: {{config: {{hidden_size: 32, intermediate_size: 64}}}}\n"
        f"method: {PROMPT_METHODS[method]}\ntraining: {{steps: 2, batch_size: 4}}\n"
        f"output: {{dir: {output}}}\n",
    )
    code, _, err = _run_main(["train", str(recipe), "--backend", "paddle", "--no-progress"])
    assert code == 0, err
    report = json.loads((output / "train_report.json").read_text())
    assert (report["backend"], report["method"], report["steps"]) == ("paddle", method, 2)
    loaded_recipe = load_recipe(recipe, backend="paddle")
    data = prepare_data(loaded_recipe)
    loaded = peftplug.PeftModel.from_pretrained(MODELS.build(loaded_recipe.model, data.tokenizer), output)
    assert type(loaded.peft_config["default"]).__name__ == type(loaded_recipe.method_config).__name__
    held_out_loss = evaluate(loaded, data.held_out, data.tokenizer.pad_token_id)
    assert held_out_loss == pytest.approx(report["eval_loss_after"], abs=1e-5)


TINY_LLAMA = "model: {config: {hidden_size: 32, intermediate_size: 64}}\n"
SAVE_NOTES = [
    ("torch", "lora", "peft", " or HF PEFT's peft.PeftModel.from_pretrained"),
    ("paddle", "lora", "paddlenlp", " or PaddleNLP's paddlenlp.peft.LoRAModel.from_pretrained"),
    ("paddle", "{name: prefix_tuning, num_virtual_tokens: 4}", "peft", " or HF PEFT's peft.PeftModel.from_pretrained"),
    (
        "torch",
        "{name: prefix_tuning, num_virtual_tokens: 4}",
        "paddlenlp",
        " or PaddleNLP's paddlenlp.peft.PrefixModelForCausalLM.from_pretrained",
    ),
    ("torch", "ia3", "paddlenlp", " (PaddleNLP has no ia3)"),
    ("torch", "lora", "paddlenlp", " or PaddleNLP's paddlenlp.peft.LoRAModel.from_pretrained"),
    ("paddle", "ia3", "peft", " or HF PEFT's peft.PeftModel.from_pretrained"),
]


@pytest.mark.parametrize("backend, method, fmt, loaders", SAVE_NOTES)
def test_the_save_message_names_what_loads_the_format_written(tmp_path, backend, method, fmt, loaders):
    """Both backends say the same of a save: peftplug loads it, and the format's own library
    with its loader for the method (a save is in the format's module tree, whichever backend
    trained it)."""
    from peftplug.app.recipe_loop import adapter_note

    pytest.importorskip("paddlenlp" if backend == "paddle" else "transformers")
    output = tmp_path / "out"
    text = f"backend: {backend}\nmethod: {method}\noutput: {{dir: {output}, format: {fmt}}}\n"
    recipe = load_recipe(_write(tmp_path, text))
    expected = f"format {fmt}; load it with peftplug.PeftModel.from_pretrained{loaders.format(dir=output)}"
    assert adapter_note(recipe, backend) == expected


@pytest.mark.parametrize(
    "backend, fmt, loader",
    [
        ("torch", "paddlenlp", "PaddleNLP's paddlenlp.peft.LoRAModel.from_pretrained"),
        ("paddle", "peft", "HF PEFT's peft.PeftModel.from_pretrained"),
    ],
)
def test_train_prints_the_save_message_of_the_format_on_either_backend(
    tmp_path, torch, paddle_recipe_backend, backend, fmt, loader
):
    output = tmp_path / "out"
    recipe = _write(
        tmp_path,
        f"backend: {backend}\n{TINY_LLAMA}training: {{steps: 1, batch_size: 4}}\n"
        f"output: {{dir: {output}, format: {fmt}}}\n",
    )
    code, out, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 0, err
    saved = [line for line in out.splitlines() if line.startswith("saved adapter to")]
    assert saved == [
        f"saved adapter to {output} (format {fmt}; load it with peftplug.PeftModel.from_pretrained or {loader})"
    ], out


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_the_model_line_names_the_default_targets_used(tmp_path, torch, paddle_recipe_backend, backend):
    """LoRA with no ``target_modules``: the line names the architecture's defaults that were
    used (it said "on None"), in the same words on both backends."""
    recipe = _write(
        tmp_path,
        f"backend: {backend}\n{TINY_LLAMA}method: {{name: lora, r: 4}}\n"
        f"training: {{steps: 1, batch_size: 4}}\noutput: {{dir: {tmp_path / 'out'}}}\n",
    )
    code, out, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 0, err
    framework = {
        "torch": "random Llama (hidden 32, 2 layers) on PyTorch",
        "paddle": "random PaddleNLP Llama (hidden 32, 2 layers) on Paddle",
    }[backend]
    assert f"model: {framework}, LoRA r=4 alpha=8 on q_proj, v_proj\n" in out, out


def test_recipe_with_a_local_tokenizer(tmp_path, torch):
    """``tokenizer: DIR``: a local transformers tokenizer (BPE trained here) sets the tiny
    model's vocabulary, encodes the data, and the prompt stays masked."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from peftplug.app.recipe_data import load_tokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        ["Task: add two numbers\nAnswer: 5", "Name a color. Blue."] * 10,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(tmp_path / "tok")
    tokenizer = load_tokenizer(str(tmp_path / "tok"), "torch")
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    encoded = encode_pair(tokenizer, PromptPair("Task: add", " 5"), 64)
    assert encoded.input_ids[0] == 1 and encoded.input_ids[-1] == 2
    assert encoded.labels[: encoded.prompt_length] == [IGNORE_INDEX] * encoded.prompt_length
    assert tokenizer.decode(encoded.input_ids[encoded.prompt_length :]) == " 5"

    output = tmp_path / "out"
    recipe = _write(
        tmp_path,
        f"tokenizer: {tmp_path / 'tok'}\nmodel: {{config: {{hidden_size: 32, intermediate_size: 64}}}}\n"
        f"training: {{steps: 2}}\noutput: {{dir: {output}}}\n",
    )
    code, _, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 0, err
    from safetensors.numpy import load_file

    assert load_file(output / "adapter_model.safetensors")  # saved
    from peftplug.backends.torch.app_models import MODELS

    assert MODELS.build(load_recipe(recipe).model, tokenizer).get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_missing_tokenizer_directory(tmp_path):
    with pytest.raises(RecipeError, match=r"line 1: tokenizer='.*nope' is not a directory"):
        load_recipe(_write(tmp_path, f"tokenizer: {tmp_path / 'nope'}\n"))


def test_every_field_error_of_a_recipe_is_reported_at_once(tmp_path):
    """A recipe with errors in several sections and fields: one run names all of them (file,
    line, field, value), in one line, and writes nothing."""
    output = tmp_path / "out"
    recipe = _write(
        tmp_path,
        (
            "method:\n  name: lora\n  r: 0\n"
            "data:\n  eval_split: 2\n"
            f"training:\n  lr: -1\n  batch_size: 0\n  stesp: 3\n"
            f"output:\n  dir: {output}\n  format: pef\n"
        ),
    )
    code, out, err = _run_main(["train", str(recipe), "--no-progress"])
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("peftplug train: error: 6 errors in the recipe: "), err
    for fragment in [
        "line 3",
        "method.r=0",
        "line 5",
        "data.eval_split=2",
        "line 7",
        "training.lr=-1",
        "line 8",
        "training.batch_size=0",
        "line 9",
        "training.stesp=3",
        "did you mean 'steps'",
        "line 12",
        "output.format='pef'",
    ]:
        assert fragment in lines[0], (fragment, lines[0])
    assert not output.exists()


@pytest.mark.parametrize(
    "config, message",
    [
        ("{hidden_size: 30}", "model.config.hidden_size=30 must be a multiple of model.config.num_attention_heads (4)"),
        (
            "{num_key_value_heads: 3}",
            "model.config.num_attention_heads=4 must be a multiple of model.config.num_key_value_heads (3)",
        ),
    ],
)
def test_head_shapes_that_do_not_divide_are_refused_before_training(tmp_path, config, message):
    """A width the heads do not divide failed mid-run with a shape error; the recipe check
    names the line and both fields."""
    recipe = _write(tmp_path, f"model:\n  architecture: llama\n  config: {config}\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml, line 3: " + message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(recipe)
