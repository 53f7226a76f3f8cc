"""The wheel holds every package of the tree, under its installed name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from repo_root import ROOT

INSTALLED_AS = {"peftplug": "peftplug", "backends": "peftplug/backends", "plugins": "peftplug/plugins"}


def test_wheel_contains_every_subpackage(tmp_path):
    pytest.importorskip("build")
    source = tmp_path / "src"
    source.mkdir()
    for name in ["pyproject.toml", "setup.py", "README.md", *INSTALLED_AS]:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("peftplug-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{INSTALLED_AS[top]}/{init.parent.relative_to(ROOT / top).as_posix()}/__init__.py".replace("/./", "/")
        for top in INSTALLED_AS
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert expected and expected <= names, sorted(expected - names)
    assert "peftplug/app/data/instructions.jsonl" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "peftplug = peftplug.app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
