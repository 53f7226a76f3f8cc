"""The ``peftplug`` command line.

``methods`` lists what the plugins registered; ``train`` runs a recipe (default: the built-in
LoRA instruction-tuning job, see :mod:`peftplug.app.recipe`); ``inspect`` describes a saved adapter
through the registered formats; ``merge`` folds an adapter into its base model (or, without
``--base``, joins tensor-parallel shard files); ``generate`` runs base + adapter on a prompt.
This module stays thin and imports no framework: a framework is imported only by the command
that needs it.

Bad input exits with status 2 and one line on stderr; a failing command exits with status 1
and one line on stderr (``--debug`` shows the traceback instead). Paddle's and PaddleNLP's own
warnings and INFO logging are not shown during a command (``--debug`` shows them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from peftplug.app.train_options import TrainOptions

PROG = "peftplug"

METHODS_EXAMPLES = """\
examples:
  peftplug methods              what is registered, and from which plugin and distribution
  peftplug methods --json       the same, as JSON
"""

TRAIN_EXAMPLES = """\
examples:
  peftplug train                                  the demo job: about 100 CPU steps, then save
  peftplug train recipe.yaml                      the job a recipe file describes
  peftplug train recipe.yaml --backend paddle     the same recipe on PaddlePaddle
  peftplug train --show-recipe > recipe.yaml      start a recipe from the default one
  peftplug train --steps 300 --output my-adapter  train longer, save elsewhere
  peftplug train --data my.jsonl --max-length 256 your own {"instruction", "input", "output"} lines

Flags override the recipe's values. The backend is --backend, else $PEFTPLUG_BACKEND, else the
recipe's. The adapter is saved in the recipe's format (HF PEFT's by default) with a JSON report
(train_report.json); load it onto the same base with peftplug.PeftModel.from_pretrained, or
give the recipe as --base to peftplug generate / peftplug merge.
"""

INSPECT_EXAMPLES = """\
examples:
  peftplug inspect peftplug-out          method, format, tensors, base model, target modules
  peftplug inspect lora-dir --json       the same, as JSON
"""

MERGE_EXAMPLES = """\
examples:
  peftplug merge peftplug-out --base ./llama --out ./llama-merged
                                         a full model with the adapter folded in (loads
                                         in transformers without peftplug)
  peftplug merge peftplug-out --base recipe.yaml --out merged
                                         the base rebuilt from the recipe that trained it
  peftplug merge shards/ --out joined    join tensor-parallel shard files into one adapter
  peftplug merge shards/ --out joined --format paddlenlp
                                         ... written in PaddleNLP's files
"""

GENERATE_EXAMPLES = """\
examples:
  peftplug generate peftplug-out --base recipe.yaml --prompt "Name a primary color."
  peftplug generate lora-dir --base ./llama --prompt "Once upon a time" --raw --max-new-tokens 50
"""

CONVERT_EXAMPLES = """\
examples:
  peftplug convert torch-lora paddle-lora --to paddlenlp --architecture llama
                                         HF PEFT files -> PaddleNLP files (llama. module tree)
  peftplug convert paddle-lora hf-lora --to peft
                                         back (the family is told by the llama. names)
  peftplug convert prefix-dir out --to paddlenlp --base-config ./llama/config.json
                                         prefix tuning: the base config gives rope_theta
  peftplug convert lora out --to paddlenlp --base-config ./llama-fused --fuse-attention-qkv
                                         q/k/v LoRA onto PaddleNLP's fused qkv_proj (rank x3)

The destination is written atomically: on an error it is left as it was.
"""

MAIN_EXAMPLES = """\
examples:
  peftplug methods              list backends, methods and formats
  peftplug train --steps 50     fine-tune a tiny Llama with LoRA on CPU
  peftplug train recipe.yaml    run a recipe (backend, model, method, data, training, output)
  peftplug inspect DIR          what a saved adapter holds
  peftplug merge DIR --base MODEL --out OUT
  peftplug convert SRC DST --to paddlenlp|peft
  peftplug generate DIR --base MODEL --prompt TEXT
  peftplug train --help         the options of one command
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``prog: error: ... (see --help)``.
    ``command_parsers`` maps each subcommand to its parser (set on the top-level parser)."""

    command_parsers: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        """Print the one-line error and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def build_parser() -> _Parser:
    """The argument parser of the ``peftplug`` command, with its subcommands."""
    from peftplug import __version__

    parser = _Parser(
        prog=PROG,
        description="peftplug: parameter-efficient fine-tuning where every method and framework is a plugin.",
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add_command(name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS keeps the top-level --debug when this one is not given.
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback when the command fails",
        )
        return command

    methods = add_command(
        "methods",
        "List the registered backends, methods, formats and architectures, with the plugin and "
        "distribution of each, and the plugins that failed to load.",
        METHODS_EXAMPLES,
    )
    methods.add_argument("--json", action="store_true", help="print JSON instead of text")
    methods.set_defaults(handler=_run_methods)

    train = add_command(
        "train",
        "Fine-tune as a recipe says (default: LoRA on a tiny random Llama with the instruction set "
        "shipped with peftplug, on CPU); save the adapter and a JSON report.",
        TRAIN_EXAMPLES,
    )
    defaults = dataclasses.asdict(TrainOptions())
    train.add_argument(
        "recipe",
        nargs="?",
        default=None,
        metavar="RECIPE",
        help="a recipe file (.yaml, .json or .toml); default: the built-in job",
    )
    train.add_argument(
        "--backend", default=None, help="run on this backend (overrides $PEFTPLUG_BACKEND and the recipe)"
    )
    train.add_argument(
        "--show-recipe",
        action="store_true",
        help="print the recipe (default: the built-in one) as the other flags would run it, and exit",
    )
    train.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help=f"optimizer steps (default: the recipe's; {defaults['steps']} in the built-in one)",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help=f"peak AdamW learning rate (default: the recipe's; {defaults['lr']})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"examples per step (default: the recipe's; {defaults['batch_size']})",
    )
    train.add_argument(
        "--seed",
        type=_nonnegative_int,
        default=None,
        help=f"seed of the base model, the adapter init and the batch order (default: {defaults['seed']})",
    )
    train.add_argument(
        "--output",
        default=None,
        help=f"directory to save the adapter in (default: the recipe's; ./{defaults['output']})",
    )
    train.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        help="longest sequence in tokens; longer examples are cut, those whose prompt fills it are "
        f"dropped, with a warning (default: {defaults['max_length']})",
    )
    train.add_argument(
        "--data", default=None, metavar="FILE.jsonl", help="instruction file to train on instead of the recipe's"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_run_train)

    inspect = add_command(
        "inspect",
        "Describe a saved adapter in any registered format: method, format, framework layout, "
        "tensors with shapes, dtypes and sizes, base model, target modules.",
        INSPECT_EXAMPLES,
    )
    inspect.add_argument("directory", metavar="DIR", help="an adapter directory")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(handler=_run_inspect)

    merge = add_command(
        "merge",
        "Fold an adapter into its base model and save the full model in the base's own format; "
        "without --base, join tensor-parallel shard files into one adapter.",
        MERGE_EXAMPLES,
    )
    merge.add_argument("directory", metavar="DIR", help="the adapter (or shard) directory")
    merge.add_argument(
        "--base",
        default=None,
        metavar="MODEL",
        help="the base model: a local model directory, or the recipe that trained the adapter",
    )
    merge.add_argument("--out", required=True, help="directory to write (must be new or empty)")
    merge.add_argument(
        "--format", default=None, help="without --base: the format of the joined adapter (default: the shards')"
    )
    merge.set_defaults(handler=_run_merge)

    generate = add_command(
        "generate",
        "Load a base model and an adapter and continue a prompt (greedy decoding).",
        GENERATE_EXAMPLES,
    )
    generate.add_argument("directory", metavar="DIR", help="the adapter directory")
    generate.add_argument(
        "--base",
        required=True,
        metavar="MODEL",
        help="the base model: a local model directory, or the recipe that trained the adapter",
    )
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument(
        "--max-new-tokens", type=_positive_int, default=64, help="longest continuation (default: %(default)s)"
    )
    generate.add_argument(
        "--raw",
        action="store_true",
        help="feed the prompt as is (default: in the instruction template the training job uses)",
    )
    generate.set_defaults(handler=_run_generate)
    convert = add_command(
        "convert",
        "Convert an adapter for the other library: HF PEFT (PyTorch) <-> PaddleNLP (Paddle); module "
        "names, layouts, fused projections and prefix positions are mapped so it gives the same outputs.",
        CONVERT_EXAMPLES,
    )
    convert.add_argument("src", metavar="SRC", help="the adapter directory (any registered format)")
    convert.add_argument("dst", metavar="DST", help="the directory to write")
    convert.add_argument(
        "--to",
        required=True,
        choices=("paddlenlp", "peft"),
        help="paddlenlp: PaddleNLP's module tree and files; peft: HF transformers' tree, HF PEFT files",
    )
    convert.add_argument(
        "--architecture",
        default=None,
        help="the model family (llama, qwen2, bloom, gpt2, ...) when the files do not tell it",
    )
    convert.add_argument(
        "--base-config",
        default=None,
        metavar="CONFIG",
        help="the base model's config.json (or its directory): family, head counts, rope_theta",
    )
    convert.add_argument(
        "--fuse-attention-qkv",
        action="store_true",
        default=None,
        help="target a PaddleNLP Llama with fuse_attention_qkv (default: the base config's)",
    )
    convert.add_argument(
        "--fuse-attention-ffn",
        action="store_true",
        default=None,
        help="target a PaddleNLP Llama with fuse_attention_ffn (default: the base config's)",
    )
    convert.set_defaults(handler=_run_convert)
    parser.command_parsers = {
        "methods": methods,
        "train": train,
        "inspect": inspect,
        "merge": merge,
        "generate": generate,
        "convert": convert,
    }
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``peftplug`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    status: 0 on success, 1 when the command fails, 2 for bad usage."""
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # argparse reports a subcommand's unknown options on the top-level parser; name the
            # subcommand instead, so the hint points at the right --help.
            owner = parser.command_parsers.get(getattr(args, "command", None), parser)
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for a relaunch on several processes
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        return exit_.code if isinstance(exit_.code, int) else 2
    if getattr(args, "handler", None) is None:
        print(
            f"{PROG}: error: name a command: {', '.join(parser.command_parsers)} (see '{PROG} --help')", file=sys.stderr
        )
        return 2
    try:
        with contextlib.nullcontext() if args.debug else quiet_frameworks():
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `peftplug methods | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as error:  # one line for the user; the traceback on request
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def quiet_frameworks() -> Iterator[None]:
    """Within the block, warnings raised in the files of the packages the backends name in
    ``quiet_packages`` are not shown and INFO logging is off (Paddle, PaddleNLP and datasets log at
    INFO to stderr; peftplug's CLI prints, it does not log). For CLI commands only: library users
    keep both."""
    roots: list[tuple[str, ...]] = []
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        # Filters cannot do it: importing Paddle puts an "always" filter in front of them.
        show = warnings.showwarning

        def show_ours(message: Any, category: Any, filename: str, *args: Any, **kwargs: Any) -> None:
            if not roots:  # read at the first warning: the plugins are loaded by then
                roots.append(_package_directories(_quiet_packages()))
            if not str(filename).startswith(roots[0]):
                show(message, category, filename, *args, **kwargs)

        warnings.showwarning = show_ours
        logging.disable(logging.INFO)
        try:
            yield
        finally:
            logging.disable(previous)


def _quiet_packages() -> list[str]:
    """The ``quiet_packages`` of every registered backend (plugin load warnings held back)."""
    from peftplug.manager import get_plugin_manager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [name for backend in get_plugin_manager().backends for name in backend.quiet_packages]


def _package_directories(names: Sequence[str]) -> tuple[str, ...]:
    """The directories (ending in a separator) of the installed packages ``names``, not imported."""
    import importlib.util

    directories = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            directories.append(os.path.join(location, ""))
    return tuple(directories)


def _run_convert(args: argparse.Namespace) -> int:
    """``peftplug convert``: :func:`peftplug.convert`, then one line naming what was written."""
    from peftplug.interop.convert import ConversionError, convert

    try:
        written = convert(
            args.src,
            args.dst,
            to=args.to,
            architecture=args.architecture,
            base_config=args.base_config,
            fuse_attention_qkv=args.fuse_attention_qkv,
            fuse_attention_ffn=args.fuse_attention_ffn,
        )
    except ConversionError as error:
        raise ConversionError(_as_options(str(error))) from error
    print(f"converted {args.src} -> {args.dst} ({args.to}): {', '.join(sorted(p.name for p in written))}")
    return 0


def _as_options(message: str) -> str:
    """A library message that names keyword arguments, naming the command's options instead."""

    def option(match: re.Match) -> str:
        return "--" + match.group(1).replace("_", "-") + (" " if match.group(2) else "")

    return re.sub(r"""\b(architecture|base_config)=(?=([\w'"<])?)""", option, message)


def _one_line(error: BaseException) -> str:
    from peftplug.errors import PeftplugError

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (PeftplugError, OSError)):
        return text
    return f"{type(error).__name__}: {text} (run with --debug for the traceback)"


# ----------------------------------------------------------------------------- methods
def methods_report() -> dict[str, Any]:
    """What the plugin manager holds, as plain data: backends, methods (with ``peft_type``),
    formats and architectures, each with its plugin and distribution, and the entry points
    that failed to load. Imports no framework."""
    from peftplug.manager import get_plugin_manager

    with warnings.catch_warnings():
        # Load failures are reported below, with their distribution; no warning on top.
        warnings.filterwarnings("ignore", message="peftplug: plugin", category=RuntimeWarning)
        manager = get_plugin_manager()

    def origin(registry: Any, name: str) -> dict[str, str]:
        plugin = registry.owner(name)
        return {"plugin": plugin, "distribution": manager.distribution_of(plugin)}

    backends, methods, formats = manager.backends, manager.methods, manager.formats
    architectures = manager.architectures
    return {
        "backends": [
            {"name": b.name, "description": b.description, **origin(backends, b.name)}
            for b in sorted(backends, key=lambda b: b.name)
        ],
        "methods": [
            {
                "name": m.name,
                "peft_type": m.peft_type,
                "kind": m.kind,
                "config": m.config_class.__name__,
                "description": m.description,
                **origin(methods, m.name),
            }
            for m in sorted(methods, key=lambda m: m.name)
        ],
        "formats": [
            {"name": f.name, "description": f.description, **origin(formats, f.name)}
            for f in sorted(formats, key=lambda f: f.name)
        ],
        "architectures": [
            {"name": a.name, "model_types": list(a.model_types), **origin(architectures, a.name)}
            for a in sorted(architectures, key=lambda a: a.name)
        ],
        "failures": [{"name": f.name, "distribution": f.distribution, "error": f.error} for f in manager.failures],
    }


def format_methods_report(report: dict[str, Any]) -> str:
    """The text of ``peftplug methods`` for a :func:`methods_report`: one aligned table per
    kind of registration, then the plugin load failures."""
    lines: list[str] = []

    def section(title: str, rows: list[list[str]]) -> None:
        lines.append(f"{title}:")
        if not rows:
            lines.append("  (none)")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def origin(item: dict[str, Any]) -> str:
        return f"plugin {item['plugin']} (distribution {item['distribution']})"

    section("backends", [[b["name"], origin(b)] for b in report["backends"]])
    section(
        "methods",
        [[m["name"], f"peft_type {m['peft_type']}", m["kind"], m["config"], origin(m)] for m in report["methods"]],
    )
    section("formats", [[f["name"], origin(f)] for f in report["formats"]])
    section("architectures", [[a["name"], ", ".join(a["model_types"]), origin(a)] for a in report["architectures"]])
    lines.append("plugin load failures:")
    if not report["failures"]:
        lines.append("  (none)")
    for failure in report["failures"]:
        lines.append(f"  {failure['name']} (distribution {failure['distribution']}): {failure['error']}")
    return "\n".join(lines)


def _run_methods(args: argparse.Namespace) -> int:
    report = methods_report()
    print(json.dumps(report, indent=2) if args.json else format_methods_report(report))
    return 0


# ----------------------------------------------------------------------------- train
def _run_train(args: argparse.Namespace) -> int:
    from peftplug.app.recipe import load_recipe, recipe_text
    from peftplug.app.train_options import apply_options

    options = {
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "output": args.output,
        "max_length": args.max_length,
        "data": args.data,
    }
    if args.show_recipe:
        print(recipe_text(args.recipe, backend=args.backend, options=options), end="")
        return 0
    # Everything is checked before a framework is imported or a file written.
    recipe = apply_options(load_recipe(args.recipe, backend=args.backend), options)
    from peftplug.app.recipe_run import launch_processes, run_recipe

    if launch_processes(recipe):
        from peftplug.app.backend_parts import part

        launch = part(recipe.backend, "launcher", "distributed launcher")
        return launch(recipe.distributed.processes, args.argv)

    try:
        run_recipe(recipe, progress=not args.no_progress)
    except ImportError as error:
        if args.debug:
            raise
        from peftplug.app.backend_parts import backend

        extra = backend(recipe.backend).extra or "the package"
        print(
            f"{PROG} train: error: backend {recipe.backend} needs a package that is missing ({error}); "
            f"install it with: pip install '{extra}'",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------------------- inspect
def inspect_adapter(directory: str) -> dict[str, Any]:
    """What the adapter in ``directory`` holds, as plain data, read through the registered
    formats (the format is detected from the files): method, format, on-disk files, tensors in
    peftplug's canonical HF PEFT names and layout, base model, target modules, the config.
    Imports no framework for the safetensors and pdparams formats."""
    from pathlib import Path

    from peftplug.adapter_io import detect_format
    from peftplug.directory_commit import settled_for_reading
    from peftplug.distributed.tp_save import shards_to_load
    from peftplug.manager import get_plugin_manager

    manager = get_plugin_manager()
    root = Path(directory)
    shard_set = shards_to_load(root, None) if root.is_dir() else None
    if shard_set is not None:
        fmt, state = _joined_shards(shard_set, manager)
    else:
        with settled_for_reading(root):
            fmt = detect_format(root, manager)
            state = fmt.read(root)
    config = state.config
    method = manager.method_for_config(config)
    tensors = [
        {"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "bytes": int(array.nbytes)}
        for name, array in sorted(state.tensors.items())
    ]
    target_modules = getattr(config, "target_modules", None)
    return {
        "directory": str(root),
        "method": method.name,
        "peft_type": method.peft_type,
        "config_class": type(config).__name__,
        "format": fmt.name,
        "format_description": fmt.description,
        "framework_layout": getattr(fmt, "layout", None) or _layout_of(fmt.name),
        "files": [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(root.iterdir()) if p.is_file()],
        "base_model": config.base_model_name_or_path,
        "task_type": config.task_type,
        "target_modules": sorted(target_modules) if isinstance(target_modules, list) else target_modules,
        "parameters": state.num_parameters(),
        "bytes": state.nbytes(),
        "tensors": tensors,
        "extra_tensors": sorted(state.extra_tensors),
        "config": config.to_dict(),
        "tensor_parallel_degree": shard_set.degree if shard_set is not None else None,
    }


def _joined_shards(shard_set: Any, manager: Any) -> tuple[Any, Any]:
    """(format, joined AdapterState) of a folder of tensor-parallel shard files."""
    from peftplug.distributed.tp_shards import join_shards, shards_format

    fmt = manager.formats.get(shards_format(shard_set, manager=manager))
    return fmt, join_shards(shard_set, fmt.name)


def _layout_of(format_name: str) -> str:
    return {
        "peft": "HF PEFT / PyTorch: nn.Linear weights [out, in], keys base_model.model.<module path>.<tensor>",
    }.get(format_name, f"as written by the {format_name!r} format plugin")


def format_inspect_report(report: dict[str, Any]) -> str:
    """The text of ``peftplug inspect`` for an :func:`inspect_adapter` report."""
    lines = [
        f"adapter:         {report['directory']}",
        f"method:          {report['method']} (peft_type {report['peft_type']}, {report['config_class']})",
        f"format:          {report['format']}: {report['format_description']}",
        f"on-disk layout:  {report['framework_layout']}",
        "files:           " + ", ".join(f"{f['name']} ({_size(f['bytes'])})" for f in report["files"]),
        *_shard_lines(report),
        f"base model:      {report['base_model'] or '(not recorded)'}",
        f"task type:       {report['task_type'] or '(none)'}",
        f"target modules:  {_targets(report['target_modules'])}",
        f"parameters:      {report['parameters']:,d} in {len(report['tensors'])} tensors ({_size(report['bytes'])})",
        "tensors (peftplug's canonical names and layout: HF PEFT's):",
    ]
    width = max((len(t["name"]) for t in report["tensors"]), default=0)
    for tensor in report["tensors"]:
        shape = "x".join(str(d) for d in tensor["shape"]) or "scalar"
        lines.append(f"  {tensor['name'].ljust(width)}  {shape:>12}  {tensor['dtype']:<8}  {_size(tensor['bytes'])}")
    if report["extra_tensors"]:
        lines.append(f"encoder tensors kept beside HF PEFT's file: {', '.join(report['extra_tensors'])}")
    return "\n".join(lines)


def _shard_lines(report: dict[str, Any]) -> list[str]:
    degree = report.get("tensor_parallel_degree")
    if not degree:
        return []
    return [
        f"tensor parallel: shard files of {degree} ranks, joined for this report "
        f"(peftplug merge {report['directory']} --out DIR writes them joined)"
    ]


def _targets(targets: Any) -> str:
    if targets is None:
        return "(none)"
    return ", ".join(targets) if isinstance(targets, list) else str(targets)


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover


def _run_inspect(args: argparse.Namespace) -> int:
    report = inspect_adapter(args.directory)
    print(json.dumps(report, indent=2) if args.json else format_inspect_report(report))
    return 0


# ----------------------------------------------------------------------------- merge
def _run_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from peftplug.errors import PeftplugError

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PeftplugError(f"--out {out} exists and is not an empty directory; choose a new one")
    if args.base is None:
        from peftplug.distributed.tp_shards import join_shard_directory

        written = join_shard_directory(args.directory, out, to=args.format)
        print(f"joined the shards of {args.directory} into {out}: {', '.join(p.name for p in written)}")
        return 0
    if args.format is not None:
        raise PeftplugError(
            "--format applies to joining shards (no --base); a merged model is saved in the base's format"
        )
    from peftplug.adapter_io import read_adapter
    from peftplug.app.backend_parts import model_builder
    from peftplug.app.recipe_models import check_base, copy_tokenizer_files, load_base

    check_base(args.base)
    config = read_adapter(args.directory).config  # a bad adapter fails before the base loads
    base, _, backend = load_base(args.base, config.task_type, "merge")
    merged = _load_every_key(base, args.directory).merge_and_unload()
    merged.save_pretrained(str(out))
    copied = copy_tokenizer_files(args.base, out)
    tokenizer_note = f" and the tokenizer files ({', '.join(copied)})" if copied else ""
    print(
        f"merged {args.directory} into {args.base}: saved the full model{tokenizer_note} to {out} "
        f"(load it with {model_builder(backend).library} alone)"
    )
    return 0


def _load_every_key(base: Any, directory: str) -> Any:
    """The adapter in ``directory`` on ``base``; keys and modules that do not all meet (a base of
    another depth, say) are an error here, where Python keeps them a warning: a command must not
    save a half-merged model or generate from a half-loaded one."""
    import peftplug
    from peftplug.errors import AdapterKeysWarning, AdapterLoadError

    with warnings.catch_warnings():
        warnings.simplefilter("error", AdapterKeysWarning)
        try:
            return peftplug.PeftModel.from_pretrained(base, directory)
        except AdapterKeysWarning as mismatch:
            raise AdapterLoadError(f"{directory} does not fit the base: {mismatch}") from None


# ----------------------------------------------------------------------------- generate
def _run_generate(args: argparse.Namespace) -> int:
    from peftplug.adapter_io import read_adapter
    from peftplug.app.backend_parts import part
    from peftplug.app.instructions import Example, format_prompt
    from peftplug.app.recipe_models import check_base, check_tokenizer, load_base

    check_base(args.base)
    check_tokenizer(args.base)
    config = read_adapter(args.directory).config
    text = args.prompt if args.raw else format_prompt(Example(args.prompt, "", ""))
    base, tokenizer, backend = load_base(args.base, config.task_type, "generate")
    generate = part(backend, "generator", "generator")
    model = _load_every_key(base, args.directory)
    print(generate(model, tokenizer, text, args.max_new_tokens))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
