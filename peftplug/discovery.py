"""The built-in plugins, found on disk instead of listed by hand.

Every package below ``peftplug.backends`` and ``peftplug.plugins`` is a plugin, so a new method or
backend folder is loaded without an edit to the core. A package that holds several plugins
declares them instead, in a ``PLUGIN_MODULES = (...)`` tuple of module names relative to it (the
formats: ``("peft", "paddlenlp")``). The packages are found with :mod:`pkgutil` and ``PLUGIN_MODULES`` is
read from the package's source as a literal, so discovery imports no plugin module: the manager
imports each one when it registers it.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil

BUILTIN_ROOTS = ("peftplug.backends", "peftplug.plugins")
SUB_PLUGINS = "PLUGIN_MODULES"


def builtin_plugins() -> tuple[str, ...]:
    """Module names of the built-in plugins: the backends, then the other plugins, each group in
    alphabetical order of its packages, a package's declared plugins in their declared order."""
    found: list[str] = []
    for root in BUILTIN_ROOTS:
        spec = importlib.util.find_spec(root)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"peftplug's built-in plugin package {root!r} is not installed")
        for package in sorted(pkgutil.iter_modules(spec.submodule_search_locations), key=lambda info: info.name):
            if not package.ispkg:
                continue
            name = f"{root}.{package.name}"
            declared = declared_plugins(package.module_finder.find_spec(name))
            found.extend([name] if declared is None else [f"{name}.{module}" for module in declared])
    return tuple(found)


def declared_plugins(spec: importlib.machinery.ModuleSpec | None) -> tuple[str, ...] | None:
    """The ``PLUGIN_MODULES`` literal of the package ``spec`` locates, read from its source
    without importing it; None when the package declares none (it is a plugin itself)."""
    source = spec.loader.get_source(spec.name) if spec is not None and spec.loader is not None else None
    if not source:
        return None
    for node in ast.parse(source, spec.origin or spec.name).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == SUB_PLUGINS for target in node.targets
        ):
            try:
                return tuple(ast.literal_eval(node.value))
            except ValueError as error:
                raise ImportError(f"{spec.name}.{SUB_PLUGINS} must be a literal tuple of module names") from error
    return None
