"""The wheel `pip install .` makes holds the whole program: every package under grammar/,
layers/ and builder/ (builder.sandbox and layers.registry once went missing: an editable install
hid it) and the grammar file the parser reads, and a build runs from it alone.

The wheel is made offline, by setuptools' own build backend in this Python (what
`pip wheel --no-build-isolation` calls), from a copy of the tree, so the checkout is not written.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT, require

PACKAGES = ("grammar", "layers", "builder")
DATA_FILES = (".lark",)  # files the code opens next to its modules (grammar/parser.py)


def _backend_available() -> bool:
    """setuptools can write wheels: itself from 70.1, with the `wheel` package before."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    return (importlib.util.find_spec("wheel") is not None
            or importlib.util.find_spec("setuptools.command.bdist_wheel") is not None)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    require(_backend_available(), "setuptools with a wheel builder (pip install wheel)")
    work = tmp_path_factory.mktemp("packaging")
    source, dist = work / "source", work / "dist"
    source.mkdir()
    for entry in ROOT.iterdir():  # pyproject.toml, README.md, ... and the packages
        if entry.is_file():
            shutil.copy2(entry, source)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; "
                               "print(build_meta.build_wheel(sys.argv[1]))", str(dist)],
        cwd=source, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    return dist / build.stdout.strip().splitlines()[-1]


def _shipped_files() -> set[str]:
    """Every module and data file of the three packages in the tree, as wheel paths."""
    files = set()
    for package in PACKAGES:
        for directory, subdirs, names in os.walk(ROOT / package):
            subdirs[:] = [d for d in subdirs if d != "__pycache__" and not d.startswith(".")]
            relative = Path(directory).relative_to(ROOT).as_posix()
            files.update(f"{relative}/{name}" for name in names
                         if name.endswith((".py", *DATA_FILES)))
    return files


def test_the_wheel_holds_every_package_and_the_grammar(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    expected = _shipped_files()
    subpackages = ("cache", "cli", "output", "plan", "progress", "sandbox", "sources", "steps")
    assert {*(f"builder/{name}/__init__.py" for name in subpackages), "builder/cli/__main__.py",
            "layers/registry/__init__.py", "grammar/dockerfile.lark"} <= expected
    assert sorted(expected - names) == []
    assert "pybuild = builder.cli:main" in entry_points


def test_the_installed_wheel_alone_parses_and_imports_everything(wheel: Path, tmp_path) -> None:
    """The wheel unpacked is what site-packages gets: first on the path, ahead of the
    checkout, and the parser finds its grammar there."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    check = ("import builder.cli, builder.sandbox.namespaces, builder.cache.steps\n"
             "import layers.registry.pull\n"
             "from grammar.parser import parse, _GRAMMAR\n"
             "print(builder.sandbox.__file__, layers.registry.__file__, _GRAMMAR, sep='\\n')\n"
             "print(parse('FROM scratch\\nCOPY a /b\\n').instructions[1].dest)\n")
    run = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(site)), timeout=60)
    assert run.returncode == 0, run.stderr
    *paths, dest = run.stdout.splitlines()
    assert dest == "/b"
    assert all(Path(p).is_relative_to(site) for p in paths), paths
