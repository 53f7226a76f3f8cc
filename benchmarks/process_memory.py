"""A process's own peak resident memory (no framework import), for the benchmarks' peak-RSS rows."""

from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")


def own_peak_rss() -> int:
    """This process's peak RSS in bytes: ``VmHWM``, of its own address space. ``ru_maxrss`` is no
    substitute in a child process: it starts at the RSS its parent had when it forked."""
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{STATUS} has no VmHWM line: this benchmark's peak RSS needs Linux")
