"""The README's reliability table counts what the hostile-input tests try: each row's number of
cases is the number of tests its module collects, and every hostile-input module has a row."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from repo_root import ROOT

# The console script, as the README runs the suite: `python -m pytest` from the repo root would
# import the source tree's peftplug over the installed mapping.
PYTEST = [str(Path(sys.executable).with_name("pytest"))]
ROW = re.compile(r"^\| (?P<input>[^|]+) \| (?P<cases>\d+) \| (?P<outcome>[^|]+) \| `(?P<module>tests/[\w/]+\.py)` \|$")


def table_rows() -> dict[str, int]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match["module"]] = int(match["cases"])
    return rows


def test_every_hostile_input_module_has_a_row():
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("test_hostile_*.py")}
    missing = modules - set(table_rows())
    assert modules and not missing, f"no row in the README's reliability table for {sorted(missing)}"


def test_each_row_counts_the_cases_its_module_collects():
    rows = table_rows()
    collected = subprocess.run(
        [*PYTEST, "--collect-only", "-q", "-rs", "-p", "no:cacheprovider", *rows],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    counts = Counter(line.split("::", 1)[0] for line in collected.stdout.splitlines() if "::" in line)
    # A module whose framework is not installed (transformers 5 runs without Paddle) skips whole.
    absent = {module for module in rows if counts[module] == 0}
    unexplained = [module for module in absent if f"SKIPPED [1] {module}:" not in collected.stdout]
    assert not unexplained, f"{unexplained} collect no test and were not skipped whole"
    assert {module: counts[module] for module in rows if module not in absent} == {
        module: cases for module, cases in rows.items() if module not in absent
    }
