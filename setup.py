"""Packages found, not listed: every package under ``peftplug/``, ``backends/`` and ``plugins/``
(the last two install as ``peftplug.backends`` and ``peftplug.plugins``), so a new method or
backend folder ships without an edit here. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

ROOTS = {"peftplug": "peftplug", "peftplug.backends": "backends", "peftplug.plugins": "plugins"}

setup(
    packages=[
        f"{name}.{sub}" if sub else name for name, folder in ROOTS.items() for sub in ["", *find_packages(folder)]
    ],
    package_dir=ROOTS,
)
