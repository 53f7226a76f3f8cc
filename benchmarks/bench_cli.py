"""What every benchmark script's command line shares: its options, and where its table goes."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path


def parser_for(doc: str, warmup: int = 1) -> argparse.ArgumentParser:
    """``--quick``, ``--repeats``, ``--warmup`` and ``--output``, described by ``doc``'s first line;
    a script adds its own options to what it returns."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, few rounds (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed rounds first")
    parser.add_argument("--output", type=Path, default=None, help="where to write the tables")
    return parser


def heading(script: str, started: float) -> str:
    """The line under a results file's title: the command, when it ran, and how long it took."""
    command = f"python benchmarks/{script} " + " ".join(sys.argv[1:])
    return (
        f"`{command.strip()}` — {datetime.datetime.now():%Y-%m-%d %H:%M}, {time.perf_counter() - started:.0f} s in all."
    )


def publish(text: str, args: argparse.Namespace, results: Path) -> int:
    """Print the results and write them to ``--output``, or to ``results`` unless ``--quick``."""
    print(text)
    output = args.output or (None if args.quick else results)
    if output is not None:
        output.write_text(text)
    return 0
