"""Which layer may import which, read from the source (issue 15's rule, the parts that hold now).

Outside ``peftplug/app/`` no module of ``peftplug/`` imports torch or paddle at module level, and
no backend imports a method plugin. (The core still imports the built-in configs in
``peftplug/__init__.py``; that rule is not checked yet.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "paddle", "paddlenlp", "transformers")


def imported(node: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of ``node`` when it is an absolute import, else nothing."""
    if isinstance(node, ast.Import):
        return [(node.lineno, alias.name) for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [(node.lineno, node.module)]
    return []


def module_level_imports(path: Path) -> list[tuple[int, str]]:
    """Imports outside functions, classes and ``if TYPE_CHECKING:`` blocks."""
    found = []

    def visit(nodes):
        for node in nodes:
            found.extend(imported(node))
            if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, *(handler.body for handler in node.handlers), node.orelse, node.finalbody):
                    visit(block)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def all_imports(path: Path) -> list[tuple[int, str]]:
    """Every import of the file, inside functions too."""
    return [found for node in ast.walk(ast.parse(path.read_text(), str(path))) for found in imported(node)]


def sources(folder: str, skip: str | None = None) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if skip is None or skip not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", sources("peftplug", skip="app"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_framework_at_module_level_outside_the_app(path):
    bad = [(line, name) for line, name in module_level_imports(path) if name.split(".")[0] in FRAMEWORKS]
    assert not bad, f"{path.relative_to(ROOT)}: imports {bad} at module level; import it inside the function"


@pytest.mark.parametrize("path", sources("backends"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_backend_imports_a_method(path):
    bad = [(line, name) for line, name in all_imports(path) if name.startswith("peftplug.plugins")]
    assert not bad, f"{path.relative_to(ROOT)}: imports {bad}; a backend never imports a method plugin"
