"""The suite mirrors the matrix (issue 15): each test file sits in the folder of its layer, is
named ``test_<subject>[_<backend>].py`` with the backend last, and imports no other test module
(shared helpers live in ``tests/support``, fixtures in ``conftest.py``)."""

from __future__ import annotations

import ast
from collections import Counter

from repo_root import TESTS

LAYERS = {"contract", "core", "model", "interop", "distributed", "app", "plugins"}
METHODS = "methods"  # tests/methods/<method>/test_*.py
BACKENDS = {"torch", "paddle"}


def suite_files() -> list:
    return sorted(TESTS.rglob("test_*.py"))


def named(paths) -> list[str]:
    return [path.relative_to(TESTS).as_posix() for path in paths]


def test_every_test_file_is_in_a_layer_folder():
    def placed(path) -> bool:
        folders = path.relative_to(TESTS).parts[:-1]
        return (len(folders) == 1 and folders[0] in LAYERS) or (len(folders) == 2 and folders[0] == METHODS)

    stray = named(p for p in suite_files() if not placed(p))
    assert not stray, f"not in tests/<layer>/ nor tests/{METHODS}/<method>/: {stray}"


def test_basenames_are_unique():
    # Without __init__.py, pytest's default import mode imports a test file under its basename.
    counts = Counter(path.name for path in suite_files())
    twice = sorted(name for name, count in counts.items() if count > 1)
    assert not twice, f"test file names used in more than one folder: {twice}"


def test_a_backend_in_a_name_comes_last():
    def backend_inside(path) -> bool:
        words = path.stem.split("_")[1:]
        return any(word in BACKENDS for word in words[:-1])

    misnamed = named(p for p in suite_files() if backend_inside(p))
    assert not misnamed, f"name them test_<subject>_<backend>.py: {misnamed}"


def test_no_test_module_imports_another():
    def imported(path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        return {name for name in names if name.startswith("test_") or name == "conftest"}

    found = {path.relative_to(TESTS).as_posix(): sorted(imported(path)) for path in TESTS.rglob("*.py")}
    bad = {name: modules for name, modules in found.items() if modules}
    assert not bad, f"move what is shared into tests/support/: {bad}"
