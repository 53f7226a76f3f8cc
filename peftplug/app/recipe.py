"""Recipes: one file that says what ``peftplug train`` does, checked before any work starts.

A recipe has eight sections (every one optional; the defaults are the built-in demo job)::

    backend: torch                  # torch | paddle (or any registered backend)
    model:                          # a built-in tiny architecture built from a config ...
      architecture: llama
      config: {hidden_size: 64}     # overrides of the architecture's tiny defaults
      seed: 0                       # seed of the random base weights
      # path: ./my-model            # ... or a local model directory (HF or PaddleNLP format)
    method:                         # a registered method and the fields of its config class
      name: lora
      r: 8
      lora_alpha: 16
      target_modules: [q_proj, v_proj]
    data:
      path: null                    # JSON / JSONL / CSV file; null: the dataset shipped with peftplug
      eval_split: 0.125             # fraction held out for evaluation
    tokenizer: null                 # a local tokenizer directory; null: peftplug's ByteTokenizer
    training: {steps: 100, batch_size: 8, lr: 0.01, seed: 0, max_length: 128}
    output: {dir: peftplug-out, format: peft, merge: false, report: train_report.json}
    distributed: {engine: ddp, processes: 2}   # optional: the backend's engines (torch: ddp, fsdp)

:func:`load_recipe` reads a file (see :mod:`peftplug.app.recipe_source`), and :func:`build_recipe`
validates the data into a :class:`Recipe`: every error is a :class:`RecipeError` whose one line
names the file and line, the field, the value and what is allowed. The method is looked up in
the plugin registry and its fields validated by its own config class. This module imports no
framework: it checks that a backend's framework is installed without importing it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib.util
import math
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftplug.app.backend_parts import backend, builders, model_builder
from peftplug.app.recipe_source import FieldPath, RecipeError, RecipeSource, parse_recipe_text, read_recipe_file
from peftplug.config import AdapterConfig, _accepts_float, _serialized_fields
from peftplug.errors import ConfigError, RegistryError

__all__ = [
    "BACKEND_ENV",
    "DEFAULT_BACKEND",
    "DEFAULT_RECIPE",
    "Recipe",
    "RecipeError",
    "TINY_ARCHITECTURES",
    "build_recipe",
    "load_recipe",
    "recipe_text",
]

BACKEND_ENV = "PEFTPLUG_BACKEND"
DEFAULT_BACKEND = "torch"
MAX_POSITIONS = 1024

DATA_SUFFIXES = (".json", ".jsonl", ".csv")
SECTIONS = ("backend", "model", "method", "data", "tokenizer", "training", "output", "distributed")


@dataclasses.dataclass(frozen=True)
class TinyArchitecture:
    """A built-in architecture: its tiny config's defaults (vocabulary size and special tokens
    come from the tokenizer). The backends that build it say so (their model builder's
    ``tiny_architectures``)."""

    name: str
    defaults: Mapping[str, Any]
    description: str


_LLAMA_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": MAX_POSITIONS,
    "initializer_range": 0.125,
}
TINY_ARCHITECTURES: dict[str, TinyArchitecture] = {
    "llama": TinyArchitecture("llama", _LLAMA_SHAPE, "random Llama"),
    "qwen2": TinyArchitecture("qwen2", _LLAMA_SHAPE, "random Qwen2"),
    "gpt2": TinyArchitecture(
        "gpt2",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": MAX_POSITIONS, "initializer_range": 0.125},
        "random GPT-2",
    ),
}

DEFAULT_RECIPE = """\
# The built-in job of `peftplug train`: LoRA on a tiny random Llama, on the shipped dataset.
backend: torch
model:
  architecture: llama
  seed: 0
method:
  name: lora
  r: 8
  lora_alpha: 16
  lora_dropout: 0.0
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
data:
  path: null
  eval_split: 0.125
tokenizer: null
training:
  steps: 100
  batch_size: 8
  lr: 0.01
  seed: 0
  max_length: 128
output:
  dir: peftplug-out
  format: peft
  merge: false
  report: train_report.json
"""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The base model: a built-in ``architecture`` (with ``config`` overrides and ``seed``) or a
    local directory ``path``."""

    architecture: str | None
    path: str | None
    config: dict[str, Any]
    seed: int


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """Optimisation settings; ``steps`` is resolved from ``epochs`` once the data is known."""

    steps: int | None
    epochs: float | None
    batch_size: int
    lr: float
    seed: int
    max_length: int


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """Where and how the adapter is saved, whether a merged model is saved beside it
    (``<dir>/merged``), and the report's file name (None: no report)."""

    dir: str
    format: str
    merge: bool
    report: str | None


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """How many processes train, and the data-parallel engine that joins them (None: one process)."""

    engine: str | None = None
    processes: int = 1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``method_config`` is the method's config object, built by its class."""

    backend: str
    model: ModelSpec
    method: str
    method_config: AdapterConfig
    data_path: str | None
    eval_split: float
    tokenizer: str | None
    training: TrainingSpec
    output: OutputSpec
    origin: str
    distributed: DistributedSpec = DistributedSpec()

    def replace(self, **sections: Any) -> Recipe:
        """A copy with whole sections replaced (``training=...``)."""
        return dataclasses.replace(self, **sections)


# ----------------------------------------------------------------------------- entry points
def load_recipe(path: str | Path | None = None, backend: str | None = None, manager: Any = None) -> Recipe:
    """Read and validate the recipe at ``path`` (None: :data:`DEFAULT_RECIPE`).

    The backend is ``backend`` when given (the CLI's ``--backend``), else the environment
    variable ``PEFTPLUG_BACKEND`` when set, else the recipe's. Raises :class:`RecipeError`.
    """
    source = read_recipe_file(path) if path is not None else parse_recipe_text(DEFAULT_RECIPE, "<default recipe>")
    return build_recipe(source, backend=backend, manager=manager)


def build_recipe(source: RecipeSource, backend: str | None = None, manager: Any = None) -> Recipe:
    """Validate ``source`` into a :class:`Recipe` (see :func:`load_recipe`)."""
    from peftplug.manager import get_plugin_manager

    manager = manager or get_plugin_manager()
    check = _Checker(source)
    data = source.data
    check.known_keys((), data, list(SECTIONS))

    # Each section (and, within one, each field) is checked even when another failed, so that
    # one run reports every error of the recipe.
    chosen = check.collect(lambda: _choose_backend(check, data, backend, manager), None)
    model = check.collect(lambda: _model_spec(check, data.get("model", {}), chosen, manager), None) if chosen else None
    method, method_config = check.collect(lambda: _method(check, data.get("method", "lora"), manager), (None, None))
    data_path, eval_split = _data(check, data.get("data", {}))
    tokenizer = check.collect(lambda: _tokenizer(check, data.get("tokenizer")), None)
    training = _training(check, data.get("training", {}), model)
    output = _output(check, data.get("output", {}), manager)
    distributed = _distributed(check, data.get("distributed", {}), chosen, training, output, manager)
    check.finish()
    return Recipe(
        backend=chosen,
        model=model,
        method=method,
        method_config=method_config,
        data_path=data_path,
        eval_split=eval_split,
        tokenizer=tokenizer,
        training=training,
        output=output,
        origin=source.origin,
        distributed=distributed,
    )


def recipe_text(
    path: str | Path | None = None, backend: str | None = None, options: Mapping[str, Any] | None = None
) -> str:
    """The recipe at ``path`` (None: :data:`DEFAULT_RECIPE`) as ``peftplug train`` runs it with
    ``backend`` (``--backend``; else ``PEFTPLUG_BACKEND``) and the flag values ``options`` (see
    :func:`~peftplug.app.train_options.apply_options`), checked as a run checks them: the file's
    own text when they change nothing, else YAML with the values they set (comments dropped)."""
    import yaml

    from peftplug.app.train_options import apply_options

    source = read_recipe_file(path) if path is not None else parse_recipe_text(DEFAULT_RECIPE, "<default recipe>")
    given = {name: value for name, value in (options or {}).items() if value is not None}
    recipe = apply_options(build_recipe(source, backend=backend), given)
    if not given and recipe.backend == source.data.get("backend", DEFAULT_BACKEND):
        return Path(path).read_text(encoding="utf-8") if path is not None else DEFAULT_RECIPE
    data = copy.deepcopy(source.data)
    training = recipe.training
    length = {"steps": training.steps} if training.steps is not None else {"epochs": training.epochs}
    data["backend"] = recipe.backend
    data["model"] = {**(data.get("model") or {}), "seed": recipe.model.seed}
    data["data"] = {**_shorthand(data.get("data"), "path"), "path": recipe.data_path}
    data["training"] = {
        **length,
        "batch_size": training.batch_size,
        "lr": training.lr,
        "seed": training.seed,
        "max_length": training.max_length,
    }
    data["output"] = {**_shorthand(data.get("output", {}), "dir"), "dir": recipe.output.dir}
    header = f"# {source.origin}, as peftplug train runs it with the flags given\n"
    return header + yaml.safe_dump({key: data[key] for key in SECTIONS if key in data}, sort_keys=False)


def _shorthand(section: Any, key: str) -> dict:
    """A section written as its main value alone (``output: DIR``, ``data: FILE``) as a mapping."""
    return dict(section) if isinstance(section, dict) else {key: section}


# ----------------------------------------------------------------------------- sections
def _tokenizer(check: _Checker, value: Any) -> str | None:
    tokenizer = check.optional(("tokenizer",), value, str, "a local tokenizer directory, or null")
    if tokenizer is not None and not Path(tokenizer).is_dir():
        check.fail(("tokenizer",), tokenizer, "is not a directory; allowed: a local tokenizer directory, or null")
    return tokenizer


def _choose_backend(check: _Checker, data: dict, override: str | None, manager: Any) -> str:
    if override is not None:
        value, where = override, "--backend"
    elif os.environ.get(BACKEND_ENV):
        value, where = os.environ[BACKEND_ENV], BACKEND_ENV
    else:
        value = data.get("backend", DEFAULT_BACKEND)
        where = None
        check.type(("backend",), value, str, "a backend name such as 'torch' or 'paddle'")
    registered = manager.backends.names()
    problem = None
    if value not in registered:
        problem = f"is not a registered backend; allowed: {', '.join(registered)}{_did_you_mean(value, registered)}"
    else:
        declared = manager.backends.get(value)
        missing = [module for module in declared.requires if not _installed(module)]
        trainable = [b.name for b in manager.backends if b.recipe_runner and b.model_builder]
        if value not in trainable:
            problem = f"is registered but peftplug has no training runner for it; allowed: {', '.join(trainable)}"
        elif missing:
            problem = (
                f"needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
                f"install {declared.extra or ' and '.join(missing)} or choose another backend"
            )
    if problem:
        if where is None:
            check.fail(("backend",), value, problem)
        raise RecipeError(f"{where}={value!r} {problem}")
    return value


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _model_spec(check: _Checker, section: Any, backend: str, manager: Any) -> ModelSpec:
    path = ("model",)
    section = check.mapping(path, section)
    check.known_keys(path, section, ["architecture", "path", "config", "seed"])
    architecture = check.optional(
        path + ("architecture",), section.get("architecture"), str, "a built-in architecture name"
    )
    directory = check.optional(path + ("path",), section.get("path"), str, "a local model directory")
    seed = check.integer(path + ("seed",), section.get("seed", 0), minimum=0)
    overrides = check.mapping(path + ("config",), section.get("config", {}))
    if architecture is not None and directory is not None:
        check.fail(path + ("path",), directory, "cannot be given with model.architecture; allowed: one of the two")
    if directory is not None:
        if overrides:
            check.fail(path + ("config",), overrides, "applies to model.architecture only; allowed: {} with model.path")
        _check_model_directory(check, path + ("path",), directory, backend, manager)
        return ModelSpec(None, directory, {}, seed)
    architecture = architecture or "llama"
    spec = TINY_ARCHITECTURES.get(architecture)
    if spec is None:
        names = sorted(TINY_ARCHITECTURES)
        check.fail(
            path + ("architecture",),
            architecture,
            f"is not a built-in architecture; allowed: {', '.join(names)}{_did_you_mean(architecture, names)}",
        )
    built = model_builder(backend, manager).tiny_architectures
    if architecture not in built:
        check.fail(
            path + ("architecture",),
            architecture,
            f"has no {backend} build; allowed with backend {backend}: "
            f"{', '.join(n for n in sorted(TINY_ARCHITECTURES) if n in built)}",
        )
    config = dict(spec.defaults)
    for key, value in overrides.items():
        field = path + ("config", key)
        if key not in spec.defaults:
            check.fail(
                field, value, f"is not a setting of the tiny {architecture}; allowed: {', '.join(spec.defaults)}"
            )
        default = spec.defaults[key]
        if isinstance(default, float):
            config[key] = check.number(field, value, positive=True)
        else:
            config[key] = check.integer(field, value, minimum=1)
    _check_head_shapes(check, path + ("config",), config)
    return ModelSpec(architecture, None, config, seed)


# (width, heads) and (heads, key/value heads) pairs of the tiny configs: the first must divide by the second
_DIVISIBLE = (
    ("hidden_size", "num_attention_heads"),
    ("n_embd", "n_head"),
    ("num_attention_heads", "num_key_value_heads"),
)


def _check_head_shapes(check: _Checker, path: FieldPath, config: Mapping[str, Any]) -> None:
    """Attention splits the width into heads, and the heads into key/value groups: a size that
    does not divide is refused here, naming both fields, rather than by a shape error mid-run."""
    for whole, parts in _DIVISIBLE:
        if whole in config and parts in config and config[whole] % config[parts]:
            check.fail(
                path + (whole,),
                config[whole],
                f"must be a multiple of model.config.{parts} ({config[parts]}): attention splits it that way",
            )


def _check_model_directory(check: _Checker, field: FieldPath, directory: str, backend: str, manager: Any) -> None:
    root = Path(directory)
    if not root.is_dir():
        check.fail(field, directory, "is not a directory; allowed: a local model directory with config.json")
    if not (root / "config.json").is_file():
        check.fail(field, directory, "holds no config.json; allowed: a model saved with save_pretrained")
    found = {name: _weight_files(root, builder) for name, builder in builders(manager).items()}
    if found.get(backend):
        return
    others = {name: patterns for name, patterns in found.items() if patterns}
    if others:
        name, patterns = next(iter(others.items()))
        check.fail(
            field,
            directory,
            f"holds {model_builder(name, manager).library} weights ({', '.join(patterns)}); allowed with backend "
            f"{backend}: a {model_builder(backend, manager).library} model directory",
        )
    every = dict.fromkeys(p for builder in builders(manager).values() for p in builder.weight_files)
    check.fail(field, directory, f"holds no weights ({', '.join(every)})")


def _weight_files(root: Path, builder: Any) -> list[str]:
    """The patterns of ``builder.weight_files`` that match files in ``root``."""
    return [pattern for pattern in builder.weight_files if any(root.glob(pattern))]


def _method(check: _Checker, section: Any, manager: Any) -> tuple[str, AdapterConfig]:
    path = ("method",)
    if isinstance(section, str):
        section = {"name": section}
    section = check.mapping(path, section)
    name = section.get("name", "lora")
    check.type(path + ("name",), name, str, "a registered method name")
    registered = manager.methods.names()
    try:
        method = manager.methods.get(name)
    except RegistryError:
        check.fail(
            path + ("name",),
            name,
            f"is not a registered method; allowed: {', '.join(registered)}{_did_you_mean(name, registered)}",
        )
    config_class = method.config_class
    fields = {f.name: f for f in _serialized_fields(config_class)}
    hints = typing.get_type_hints(config_class)
    values: dict[str, Any] = {"task_type": "CAUSAL_LM"}
    for key, value in section.items():
        if key == "name":
            continue
        if key not in fields:
            allowed = sorted(fields)
            check.fail(
                path + (key,),
                value,
                f"is not a field of {config_class.__name__} ({name}); allowed: {', '.join(allowed)}"
                f"{_did_you_mean(key, allowed)}",
            )
        values[key] = _yaml12_float(value) if _accepts_float(hints[key]) else value
    try:
        config = config_class(**values)
    except ConfigError as error:
        check.fail(path + (error.field,), error.value, f"is invalid for {config_class.__name__}: {error.allowed}")
    except (TypeError, ValueError) as error:
        raise RecipeError(
            f"{check.source.where(path)}: method {name!r}: {config_class.__name__} refused the fields: {error}"
        ) from None
    return name, config


def _data(check: _Checker, section: Any) -> tuple[str | None, float]:
    path = ("data",)
    if isinstance(section, str) or section is None:
        section = {"path": section}
    section = check.collect(lambda: check.mapping(path, section), {})
    check.known_keys(path, section, ["path", "eval_split"])
    return (
        check.collect(lambda: _data_path(check, path + ("path",), section.get("path"))),
        check.collect(lambda: _eval_split(check, path + ("eval_split",), section.get("eval_split", 0.125)), 0.125),
    )


def _data_path(check: _Checker, field: FieldPath, value: Any) -> str | None:
    data_path = check.optional(field, value, str, "a JSON, JSONL or CSV file, or null")
    if data_path is not None:
        if not Path(data_path).is_file():
            check.fail(
                field, data_path, "is not a file; allowed: a JSON, JSONL or CSV file, or null for the shipped dataset"
            )
        if Path(data_path).suffix.lower() not in DATA_SUFFIXES:
            check.fail(field, data_path, f"has an unknown suffix; allowed: {', '.join(DATA_SUFFIXES)}")
    return data_path


def _eval_split(check: _Checker, field: FieldPath, value: Any) -> float:
    eval_split = check.number(field, value)
    if not 0 < eval_split < 1:
        check.fail(field, eval_split, "is out of range; allowed: a fraction between 0 and 1 (exclusive)")
    return eval_split


def _training(check: _Checker, section: Any, model: ModelSpec | None) -> TrainingSpec:
    """The training section; ``model`` (None when its section failed) bounds ``max_length``."""
    path = ("training",)
    section = check.collect(lambda: check.mapping(path, section), {})
    check.known_keys(path, section, ["steps", "epochs", "batch_size", "lr", "seed", "max_length"])
    steps, epochs = check.collect(lambda: _steps_or_epochs(check, path, section), (100, None))
    return TrainingSpec(
        steps=steps,
        epochs=epochs,
        batch_size=check.collect(lambda: check.integer(path + ("batch_size",), section.get("batch_size", 8), 1), 8),
        lr=check.collect(lambda: check.number(path + ("lr",), section.get("lr", 1e-2), positive=True), 1e-2),
        seed=check.collect(lambda: check.integer(path + ("seed",), section.get("seed", 0), minimum=0), 0),
        max_length=check.collect(lambda: _max_length(check, path + ("max_length",), section, model), 128),
    )


def _steps_or_epochs(check: _Checker, path: FieldPath, section: dict) -> tuple[int | None, float | None]:
    steps = section.get("steps")
    epochs = section.get("epochs")
    if steps is not None and epochs is not None:
        check.fail(path + ("epochs",), epochs, "cannot be given with training.steps; allowed: one of the two")
    steps = check.integer(path + ("steps",), steps, minimum=1) if steps is not None else None
    epochs = check.number(path + ("epochs",), epochs, positive=True) if epochs is not None else None
    if steps is None and epochs is None:
        steps = 100
    return steps, epochs


def _max_length(check: _Checker, field: FieldPath, section: dict, model: ModelSpec | None) -> int:
    max_length = check.integer(field, section.get("max_length", 128), minimum=8)
    if model is not None and model.architecture is not None:
        limit = model.config.get("max_position_embeddings", model.config.get("n_positions", MAX_POSITIONS))
        if max_length > limit:
            check.fail(field, max_length, f"exceeds the model's {limit} positions; allowed: 8 to {limit}")
    return max_length


def _output(check: _Checker, section: Any, manager: Any) -> OutputSpec:
    path = ("output",)
    if isinstance(section, str):
        section = {"dir": section}
    section = check.collect(lambda: check.mapping(path, section), {})
    check.known_keys(path, section, ["dir", "format", "merge", "report"])
    return OutputSpec(
        check.collect(lambda: _output_dir(check, path + ("dir",), section.get("dir", "peftplug-out"), manager)),
        check.collect(lambda: _output_format(check, path + ("format",), section.get("format", "peft"), manager)),
        check.collect(lambda: _checked(check, path + ("merge",), section.get("merge", False), bool, "true or false")),
        check.collect(lambda: _report_name(check, path + ("report",), section.get("report", "train_report.json"))),
    )


def _distributed(
    check: _Checker, section: Any, backend_name: str | None, training: TrainingSpec, output: OutputSpec, manager: Any
) -> DistributedSpec:
    """The distributed section: an engine the backend declares, a number of processes that
    divides the batch; a merged model (``output.merge``) is refused across processes."""
    path = ("distributed",)
    section = check.collect(lambda: check.mapping(path, section), {})
    check.known_keys(path, section, ["engine", "processes"])
    if not section:
        return DistributedSpec()
    processes = check.collect(lambda: check.integer(path + ("processes",), section.get("processes", 1), 1), 1)
    engine = section.get("engine")
    if backend_name is not None:
        engines = list(backend(backend_name, manager).distributed_engines)
        if engine not in engines:
            allowed = (
                f"one of {', '.join(engines)}" if engines else f"none: backend {backend_name} trains on one process"
            )
            problem = f"is not a distributed engine of backend {backend_name}; allowed: {allowed}"
            check.collect(lambda: check.fail(path + ("engine",), engine, problem + _did_you_mean(engine, engines)))
    if training.batch_size % processes:
        check.collect(
            lambda: check.fail(
                path + ("processes",),
                processes,
                f"does not divide training.batch_size={training.batch_size}; allowed: a divisor of it",
            )
        )
    if output.merge and processes > 1:
        check.collect(
            lambda: check.fail(
                ("output", "merge"), True, "is not supported across processes; allowed: false (then peftplug merge)"
            )
        )
    return DistributedSpec(engine, processes)


def _checked(check: _Checker, field: FieldPath, value: Any, expected: type, allowed: str) -> Any:
    check.type(field, value, expected, allowed)
    return value


def _output_dir(check: _Checker, field: FieldPath, directory: Any, manager: Any) -> str:
    check.type(field, directory, str, "a directory path")
    if Path(directory).exists() and not Path(directory).is_dir():
        check.fail(field, directory, "exists and is not a directory; allowed: a directory path")
    problem = output_dir_problem(directory, manager)
    if problem:
        check.fail(field, directory, f"{problem}; allowed: {OUTPUT_DIRS_ALLOWED}")
    return directory


def _output_format(check: _Checker, field: FieldPath, fmt: Any, manager: Any) -> str:
    check.type(field, fmt, str, "a registered format name")
    formats = manager.formats.names()
    if fmt not in formats:
        check.fail(
            field, fmt, f"is not a registered format; allowed: {', '.join(formats)}{_did_you_mean(fmt, formats)}"
        )
    return fmt


def _report_name(check: _Checker, field: FieldPath, value: Any) -> str | None:
    report = check.optional(field, value, str, "a file name, or null")
    if report is not None and (not report or Path(report).name != report):
        check.fail(field, report, "is not a plain file name; allowed: a name such as train_report.json, or null")
    return report


OUTPUT_DIRS_ALLOWED = "a new or empty directory, or one that holds an adapter (a previous run's output)"


def output_dir_problem(directory: str | Path, manager: Any = None) -> str | None:
    """Why ``directory`` must not receive a training run's adapter, or None when it may: it is
    new, empty, or holds an adapter of a registered format (a previous run's output). A model's
    folder is refused (its config.json beside adapter files breaks ``from_pretrained`` of the
    model), and so is any other folder of files that no format recognises."""
    from peftplug.errors import some_names
    from peftplug.manager import get_plugin_manager

    root = Path(directory)
    if not root.is_dir():
        return None
    names = sorted(p.name for p in root.iterdir())
    if not names:
        return None
    if "config.json" in names:
        return f"holds a model ({some_names(names)}); saving an adapter into it would break loading that model"
    manager = manager or get_plugin_manager()
    if any(fmt.detect(root) for fmt in manager.formats):
        return None
    return f"holds files that are not a peftplug output ({some_names(names)})"


# ----------------------------------------------------------------------------- checking
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _yaml12_float(value: Any) -> Any:
    """``1e-3`` as a float: YAML 1.1 (PyYAML) reads exponent numbers without a dot as strings."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    return value


def _did_you_mean(value: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(value), allowed, n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Type and range checks whose errors name the file, line, field, value and what is allowed."""

    def __init__(self, source: RecipeSource):
        self.source = source
        self.errors: list[str] = []

    def collect(self, work: typing.Callable[[], Any], fallback: Any = None) -> Any:
        """``work()``; when it raises :class:`RecipeError`, the error is kept for :meth:`finish`
        and ``fallback`` stands in for the value, so that the other fields are still checked."""
        try:
            return work()
        except RecipeError as error:
            self.errors.append(str(error))
            return fallback

    def finish(self) -> None:
        """Raise one :class:`RecipeError` holding every error collected (one line each, joined)."""
        if len(self.errors) == 1:
            raise RecipeError(self.errors[0])
        if self.errors:
            raise RecipeError(f"{len(self.errors)} errors in the recipe: " + " | ".join(self.errors))

    def fail(self, path: FieldPath, value: Any, problem: str) -> typing.NoReturn:
        """Raise the one-line :class:`RecipeError` for ``path``."""
        dotted = ".".join(str(part) for part in path)
        raise RecipeError(f"{self.source.where(path)}: {dotted}={value!r} {problem}")

    def known_keys(self, path: FieldPath, section: dict, allowed: list[str]) -> None:
        """Refuse keys of ``section`` not in ``allowed`` (each one an error of its own)."""
        for key, value in section.items():
            if key not in allowed:
                section_name = f" of section {path[-1]!r}" if path else ""
                problem = (
                    f"is not a recipe field{section_name}; allowed: {', '.join(allowed)}{_did_you_mean(key, allowed)}"
                )
                self.collect(functools.partial(self.fail, path + (key,), value, problem))

    def mapping(self, path: FieldPath, value: Any) -> dict:
        """``value`` when it is a mapping (None counts as empty)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, value, f"has the wrong type ({type(value).__name__}); allowed: a mapping of fields")
        return value

    def type(self, path: FieldPath, value: Any, expected: type, allowed: str) -> None:
        """Refuse ``value`` unless it is an instance of ``expected`` (bool is not an int)."""
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            self.fail(path, value, f"has the wrong type ({type(value).__name__}); allowed: {allowed}")

    def optional(self, path: FieldPath, value: Any, expected: type, allowed: str) -> Any:
        """``value`` (None allowed) after a type check."""
        if value is not None:
            self.type(path, value, expected, allowed)
        return value

    def integer(self, path: FieldPath, value: Any, minimum: int) -> int:
        """An int of at least ``minimum``."""
        self.type(path, value, int, f"an integer >= {minimum}")
        if value < minimum:
            self.fail(path, value, f"is out of range; allowed: an integer >= {minimum}")
        return value

    def number(self, path: FieldPath, value: Any, positive: bool = False) -> float:
        """A finite number (ints accepted, ``1e-3`` strings read as YAML 1.2 does); > 0 if ``positive``."""
        value = _yaml12_float(value)
        allowed = "a positive number" if positive else "a number"
        self.type(path, value, (int, float), allowed)
        if not math.isfinite(value) or (positive and value <= 0):
            self.fail(path, value, f"is out of range; allowed: {allowed}")
        return float(value)
