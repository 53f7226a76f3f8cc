"""A backend brings its own app parts: registered with a recipe runner and a model builder, a
third backend runs ``peftplug train`` without an edit to the app (this module plays that
backend: its registration, runner and builder)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from peftplug.app.cli import main
from peftplug.app.recipe import RecipeError, load_recipe
from peftplug.app.recipe_loop import RunResult
from peftplug.manager import get_plugin_manager
from peftplug.markers import hookimpl
from peftplug.registration import Backend

RUNS: list[tuple] = []


class ThirdModels:
    """The third backend's model builder: it builds the tiny Llama only."""

    library = "thirdlib"
    tiny_architectures = ("llama",)
    weight_files = ("*.third",)
    task_types = None

    def recognises(self, directory: Path) -> bool:
        """Directories holding ``*.third`` weights."""
        return any(Path(directory).glob("*.third"))

    def build(self, spec, tokenizer):
        """A stand-in model naming what it was built from."""
        return ("third model", spec.architecture, spec.seed, tokenizer.vocab_size)

    def load(self, directory, task_type):
        """A stand-in model naming its directory."""
        return ("third model", directory)

    def load_tokenizer(self, directory):
        """The third library has no tokenizers of its own."""
        raise OSError(f"thirdlib reads no tokenizer from {directory}")


MODELS = ThirdModels()


def run(recipe, data, log=print, progress=True):
    """The third backend's recipe runner: records its model, trains nothing."""
    model = MODELS.build(recipe.model, data.tokenizer)
    RUNS.append((recipe.backend, model, data.steps))
    log(f"model: {model} on the third backend")
    Path(recipe.output.dir).mkdir(parents=True, exist_ok=True)
    return RunResult(
        backend=recipe.backend,
        losses=[2.0] * data.steps,
        eval_loss_before=3.0,
        eval_loss_after=2.0,
        trainable_params=1,
        all_params=10,
        steps=data.steps,
        seconds=1.0,
        tokens=0,
        train_examples=len(data.train),
        held_out_examples=len(data.held_out),
        output=Path(recipe.output.dir),
    )


class ThirdBackend:
    """The plugin registering the third backend."""

    def __init__(self, requires: tuple[str, ...] = ()):
        self.requires = requires

    @hookimpl
    def peftplug_register_backends(self) -> Backend:
        """``third``, with the app parts of this module."""
        return Backend(
            name="third",
            implementation=f"{__name__}:ThirdModels",
            requires=self.requires,
            extra="peftplug-third",
            recipe_runner=f"{__name__}:run",
            model_builder=f"{__name__}:MODELS",
        )


def _run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_train_runs_on_a_third_backend_by_its_registration(tmp_path):
    get_plugin_manager().register(ThirdBackend(), "third-backend")
    RUNS.clear()
    output = tmp_path / "out"
    code, out, err = _run_main(["train", "--backend", "third", "--steps", "2", "--output", str(output)])
    assert code == 0, err
    assert RUNS == [("third", ("third model", "llama", 0, 259), 2)]
    assert "on the third backend" in out
    assert json.loads((output / "train_report.json").read_text())["backend"] == "third"


def test_a_third_backends_builds_and_packages_are_checked_from_its_registration(tmp_path):
    get_plugin_manager().register(ThirdBackend(requires=("no_such_package_for_peftplug",)), "third-backend")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("backend: third\n")
    with pytest.raises(RecipeError, match=r"needs no_such_package_for_peftplug.*install peftplug-third"):
        load_recipe(recipe)
    get_plugin_manager().unregister("third-backend")
    get_plugin_manager().register(ThirdBackend(), "third-backend")
    recipe.write_text("backend: third\nmodel: {architecture: gpt2}\n")
    with pytest.raises(
        Exception, match=r"model.architecture='gpt2' has no third build; allowed with backend third: llama"
    ):
        load_recipe(recipe)
