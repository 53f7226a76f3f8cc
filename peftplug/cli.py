"""The ``peftplug`` command line.

``peftplug methods`` lists what the plugins registered; ``peftplug train`` runs the built-in
LoRA instruction-tuning job (see :mod:`peftplug.train`). This module stays thin and imports no
framework: torch is imported only on the ``train`` path, by :mod:`peftplug.train`.

Bad input exits with status 2 and one line on stderr; a failing command exits with status 1
and one line on stderr (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from typing import Any, NoReturn, Sequence

from peftplug.train_options import TrainOptions

PROG = "peftplug"

METHODS_EXAMPLES = """\
examples:
  peftplug methods              what is registered, and from which plugin and distribution
  peftplug methods --json       the same, as JSON
"""

TRAIN_EXAMPLES = """\
examples:
  peftplug train                                  the demo job: about 100 CPU steps, then save
  peftplug train --steps 300 --output my-adapter  train longer, save elsewhere
  peftplug train --data my.jsonl --max-length 256 your own {"instruction", "input", "output"} lines

The adapter is saved in HF PEFT's format: load it with peftplug.PeftModel.from_pretrained or
peft.PeftModel.from_pretrained onto peftplug.train.build_base_model(seed).
"""

MAIN_EXAMPLES = """\
examples:
  peftplug methods              list backends, methods and formats
  peftplug train --steps 50     fine-tune a tiny Llama with LoRA on CPU
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
            name, help=help_text, description=help_text, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS keeps the top-level --debug when this one is not given.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback when the command fails")
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
        "Fine-tune a tiny random Llama with LoRA on the instruction set shipped with peftplug (CPU).",
        TRAIN_EXAMPLES,
    )
    defaults = dataclasses.asdict(TrainOptions())
    train.add_argument("--steps", type=_positive_int, default=defaults["steps"],
                       help="optimizer steps (default: %(default)s)")
    train.add_argument("--lr", type=_positive_float, default=defaults["lr"],
                       help="peak AdamW learning rate (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=defaults["batch_size"],
                       help="examples per step (default: %(default)s)")
    train.add_argument("--seed", type=_nonnegative_int, default=defaults["seed"],
                       help="seed of the base model, the LoRA init and the batch order (default: %(default)s)")
    train.add_argument("--output", default=defaults["output"],
                       help="directory to save the adapter in (default: ./%(default)s)")
    train.add_argument("--max-length", type=_positive_int, default=defaults["max_length"],
                       help="longest sequence in tokens (bytes); longer examples are cut (default: %(default)s)")
    train.add_argument("--data", default=None, metavar="FILE.jsonl",
                       help="instruction file to train on instead of the shipped one")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_run_train)
    parser.command_parsers = {"methods": methods, "train": train}
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
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        return exit_.code if isinstance(exit_.code, int) else 2
    if getattr(args, "handler", None) is None:
        print(f"{PROG}: error: name a command: methods, train (see '{PROG} --help')", file=sys.stderr)
        return 2
    try:
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
            {"name": m.name, "peft_type": m.peft_type, "kind": m.kind, "config": m.config_class.__name__,
             "description": m.description, **origin(methods, m.name)}
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
        "failures": [
            {"name": f.name, "distribution": f.distribution, "error": f.error} for f in manager.failures
        ],
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
    section("methods", [
        [m["name"], f"peft_type {m['peft_type']}", m["kind"], m["config"], origin(m)] for m in report["methods"]
    ])
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
    options = TrainOptions(
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed, output=args.output,
        max_length=args.max_length, data=args.data, progress=not args.no_progress,
    )
    options.validate()  # before torch is imported: bad options fail fast
    try:
        from peftplug.train import train
    except ImportError as error:
        if args.debug:
            raise
        print(
            f"{PROG} train: error: needs torch and transformers ({error}); "
            "install them with: pip install 'peftplug[torch]'",
            file=sys.stderr,
        )
        return 1
    train(options)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
