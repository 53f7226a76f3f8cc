"""The repository's root and its tests folder, for the tests that read the tree (sources, README,
examples, the suite itself) from whichever layer folder they sit in."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
