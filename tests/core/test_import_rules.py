"""Which layer may import which, read from the source (issue 15's rule, the parts that hold now).

No module of ``peftplug/``, the app included, imports torch or paddle at module level (the
framework code lives in ``backends/``); outside the app none names a built-in method (its name,
``peft_type`` or a tensor it declares) in code; no backend imports a method plugin; and no module
of the core (``peftplug/``, whose plugins live in the top-level ``plugins/`` and ``backends/``
folders) imports ``peftplug.plugins`` or ``peftplug.backends`` in any form: the manager finds
and imports them by computed names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from repo_root import ROOT

FRAMEWORKS = ("torch", "paddle", "paddlenlp", "transformers")
PLUGIN_PACKAGES = ("peftplug.plugins", "peftplug.backends")
BACKENDS = ("torch", "paddle")


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


def every_import(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every module a file of ``package`` imports, anywhere in it: import
    statements (relative ones resolved; ``from a import b`` also as ``a.b``, which may be a
    module) and ``import_module`` / ``__import__`` calls given a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, module), *((node.lineno, f"{module}.{alias.name}") for alias in node.names)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if function in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def names_a_plugin_package(module: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in PLUGIN_PACKAGES)


def sources(folder: str, skip: str | None = None) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if skip is None or skip not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", sources("peftplug"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_framework_at_module_level_in_peftplug(path):
    bad = [(line, name) for line, name in module_level_imports(path) if name.split(".")[0] in FRAMEWORKS]
    assert not bad, f"{path.relative_to(ROOT)}: imports {bad} at module level; import it inside the function"


@pytest.mark.parametrize("path", sources("backends"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_backend_imports_a_method(path):
    bad = [(line, name) for line, name in all_imports(path) if name.startswith("peftplug.plugins")]
    assert not bad, f"{path.relative_to(ROOT)}: imports {bad}; a backend never imports a method plugin"


# Words of declared tensor suffixes that belong to no method (``base_layer.bias``).
SHARED_TENSOR_WORDS = {"base_layer", "weight", "bias"}


def built_in_method_words() -> set[str]:
    """The names, ``peft_type`` values and declared tensor-name words of the built-in methods."""
    from peftplug.manager import get_plugin_manager

    manager = get_plugin_manager()
    words = set()
    for method in manager.methods:
        if manager.distribution_of(manager.methods.owner(method.name)) != "peftplug":
            continue
        words |= {method.name, method.peft_type}
        words |= {word for role in method.tensors for word in role.suffix.split(".")} - SHARED_TENSOR_WORDS
    return words


def code_strings(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant of the file except docstrings (a string
    statement of its own, as module, class, function and attribute docstrings are)."""
    tree = ast.parse(path.read_text(), str(path))
    documentation = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documentation
    ]


@pytest.mark.parametrize("path", sources("peftplug", skip="app"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_names_a_built_in_method(path):
    """Conversion, formats, sharding and the model API read a method's declaration; a built-in's
    name in their code would make a third-party method second class. (``prompt_embeddings``,
    HF PEFT's name for every prompt-learning state, is no method's.)"""
    words = built_in_method_words()
    assert {"lora", "LORA", "lora_A", "ia3_l", "PREFIX_TUNING"} <= words
    bad = [(line, text) for line, text in code_strings(path) if words & set(re.findall(r"[A-Za-z0-9_]+", text))]
    assert not bad, f"{path.relative_to(ROOT)} names a built-in method in code: {bad}"


@pytest.mark.parametrize("path", sources("peftplug"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_plugin(path):
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    bad = [(line, name) for line, name in every_import(path.read_text(), package) if names_a_plugin_package(name)]
    assert not bad, f"{path.relative_to(ROOT)}: imports {bad}; the core never imports a plugin, the manager loads them"


@pytest.mark.parametrize(
    "source",
    [
        "import peftplug.plugins.lora",
        "from peftplug.plugins.lora.config import LoraConfig",
        "from peftplug import backends",
        "from ..plugins import lora",
        "def f():\n    from peftplug.backends.torch import ops",
        "import importlib\nimportlib.import_module('peftplug.plugins.formats.peft')",
        "from importlib import import_module\nimport_module('peftplug.backends')",
        "__import__('peftplug.plugins')",
    ],
)
def test_the_plugin_import_rule_sees_every_form(source):
    """The check above is not blind: each form of importing a plugin, in a module of
    ``peftplug.model``, is found."""
    assert any(names_a_plugin_package(name) for _, name in every_import(source, "peftplug.model"))
    assert not any(names_a_plugin_package(name) for _, name in every_import(source.replace("peftplug", "other"), "x"))


def assigned_names(path: Path) -> set[str]:
    """Names the module assigns at its top level."""
    tree = ast.parse(path.read_text(), str(path))
    return {
        target.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }


@pytest.mark.parametrize(
    "path", sources("peftplug") + sources("plugins") + sources("examples"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_dtype_helpers_are_the_backends(path):
    """``LOW_PRECISION`` is defined once per framework, in its backend's layer module."""
    assert "LOW_PRECISION" not in assigned_names(path), (
        f"{path.relative_to(ROOT)} defines LOW_PRECISION; import it from peftplug.backends.<framework>.layer"
    )


def backend_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, name)`` of each built-in backend's name used as a dict key or compared with."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Dict):
            candidates = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.Compare):
            candidates = [node.left, *node.comparators]
        else:
            continue
        found += [(c.lineno, c.value) for c in candidates if isinstance(c, ast.Constant) and c.value in BACKENDS]
    return found


@pytest.mark.parametrize("path", sources("peftplug/app"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_app_keeps_no_table_or_branch_per_backend(path):
    """The app finds a backend's parts on its registration, not in a table keyed by backend
    name nor behind ``if backend == "torch"``."""
    bad = backend_literals(path)
    assert not bad, f"{path.relative_to(ROOT)}: names backends {bad}; declare the part on the Backend registration"


def method_folders() -> list[Path]:
    """The folders of the built-in methods under ``plugins/`` (a method's folder is its name)."""
    from peftplug.manager import get_plugin_manager

    return sorted(
        ROOT / "plugins" / method.name
        for method in get_plugin_manager().methods
        if (ROOT / "plugins" / method.name).is_dir()
    )


@pytest.mark.parametrize("folder", method_folders(), ids=lambda p: p.name)
def test_no_method_imports_another(folder):
    """A method's folder is the whole of it: it imports the core and the backends' layer bases,
    never another method (a layer type such as plugins/bitsandbytes may extend several)."""
    others = [f"peftplug.plugins.{p.name}" for p in method_folders() if p != folder]
    bad = [
        (path.name, line, name)
        for path in sorted(folder.rglob("*.py"))
        for line, name in all_imports(path)
        if any(name == other or name.startswith(other + ".") for other in others)
    ]
    assert not bad, f"plugins/{folder.name} imports another method: {bad}"
